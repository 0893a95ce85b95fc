/**
 * `nbd-codec vectors`: writes the golden corpus for other implementations (the vector files and their
 * schema, and conversation vectors recorded from the bundled captures of real peers), or checks anyone's
 * vector file against this codec's decoders. The logic is the library's (`codec/vectors.ts`); this file
 * reads and writes files.
 *
 * @module
 */
import { walkArgs } from "./_args.ts";
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import {
  checkConversationVectorFile,
  CONVERSATION_VECTOR_SCHEMA_ID,
  type ConversationVector,
  conversationVector,
} from "../codec/conversation_vectors.ts";
import { checkVectorFile, type VectorCheckReport } from "../codec/vectors.ts";

/** Where the command writes (the CLI's own `CliIo` fits). */
export interface VectorsIo {
  /** Standard output. */
  stdout(text: string): void | Promise<void>;
  /** Standard error. */
  stderr(text: string): void;
}

/** The package root, to find `vectors/`. */
export interface VectorsEnvironment {
  /** The package's root directory (holding `vectors/`). */
  readonly root?: string | undefined;
}

/** Where `nbd-codec vectors` writes without `--out`. */
export const DEFAULT_OUT = "nbd-codec-vectors";
/** The conversation vector file written next to the frame vectors. */
export const CONVERSATIONS_FILE = "conversations.json";
/** Its schema, from `vectors/conversation/schema.json`. */
export const CONVERSATION_SCHEMA_FILE = "conversation-schema.json";

const USAGE = `Usage:
  nbd-codec vectors [--out DIR]
  nbd-codec vectors --check FILE [--json]

Test vectors for other NBD implementations.

  (no --check)      Write the golden corpus into DIR (default ${DEFAULT_OUT}): the frame vector files
                    (*.json, one per frame family; written by hand from the spec, never by this codec's
                    encoder), their schema (schema.json) and README, and ${CONVERSATIONS_FILE}: whole
                    conversations between real peers (qemu, nbdkit, libnbd, nbd-server), each direction's
                    bytes with every frame and notice a decoder must find and the negotiated state after each
                    (schema conversation-schema.json).
  --check FILE      Check a vector file (frame vectors or conversation vectors, by its "schema"): its
                    shape, its hex, and that this codec's decoders agree with every verdict.
  --json            With --check: print the report as JSON.

Exit status: 0 written, or every vector agrees; 1 a vector is malformed or disagrees; 2 bad arguments or
unreadable input.
`;

class UsageError extends Error {}

interface VectorsArgs {
  out: string | undefined;
  check: string | undefined;
  json: boolean;
}

function parse(args: readonly string[]): VectorsArgs | "help" {
  const out: VectorsArgs = { out: undefined, check: undefined, json: false };
  for (const arg of walkArgs(args, (m) => new UsageError(m))) {
    const a = arg.name;
    const take = arg.value;
    switch (a) {
      case "-h":
      case "--help":
        return "help";
      case "--out":
        out.out = take();
        break;
      case "--check":
        out.check = take();
        break;
      case "--json":
        arg.noValue();
        out.json = true;
        break;
      default:
        throw new UsageError(a.startsWith("-") ? `unknown option ${a}` : `unexpected argument ${a}`);
    }
  }
  if (out.check !== undefined && out.out !== undefined) throw new UsageError("give either --out or --check");
  if (out.json && out.check === undefined) throw new UsageError("--json goes with --check");
  return out;
}

/** The package's `vectors/` directory: under the package root, else under the working directory. */
function vectorsDir(root: string | undefined): string | undefined {
  for (const dir of [root, process.cwd()]) {
    if (dir === undefined) continue;
    const v = path.join(dir, "vectors");
    if (fs.existsSync(path.join(v, "schema.json"))) return v;
  }
  return undefined;
}

/** The captures table row of a capture in `vectors/captures/README.md`: its peers, negotiation, transmission. */
function captureRow(readme: string, name: string): string[] | undefined {
  const line = readme.split("\n").find((l) => l.startsWith(`| \`${name}\` |`));
  return line?.split(" | ").map((c) => c.replace(/^\| |\s*\|$/g, "").trim());
}

/**
 * Conversation vectors of every bundled capture that has both directions' bytes (`NAME.c2s.bin`,
 * `NAME.s2c.bin`), in name order, described from the captures' README.
 */
export function captureConversations(dir: string): ConversationVector[] {
  const captures = path.join(dir, "captures");
  let readme = "";
  try {
    readme = fs.readFileSync(path.join(captures, "README.md"), "utf8");
  } catch {
    // descriptions are optional
  }
  const names = fs.readdirSync(captures).filter((n) => n.endsWith(".c2s.bin")).map((n) => n.slice(0, -8))
    .sort();
  const out: ConversationVector[] = [];
  for (const name of names) {
    const s2cPath = path.join(captures, `${name}.s2c.bin`);
    if (!fs.existsSync(s2cPath)) continue;
    const row = captureRow(readme, name);
    const pcap = fs.existsSync(path.join(captures, `${name}.pcap`)) ? `${name}.pcap` : `${name}.pcapng`;
    out.push(
      conversationVector(fs.readFileSync(path.join(captures, `${name}.c2s.bin`)), fs.readFileSync(s2cPath), {
        id: `capture-${name}`,
        name: row !== undefined && row.length > 2 ? `${row[1]}: ${row[2]}` : name,
        ...(row !== undefined && row.length > 3 ? { comment: row[3]! } : {}),
        source: `capture vectors/captures/${pcap} (recorded from real peers by scripts/capture/)`,
      }),
    );
  }
  return out;
}

/**
 * A conversation vector file as text: one line per step (a megabyte of indented frames otherwise), the rest
 * indented as usual.
 */
function conversationsText(
  doc: { schema: string; description: string; conversations: ConversationVector[] },
): string {
  const conversations = doc.conversations.map(({ events, ...head }) => {
    const steps = events.map((e) => `      ${JSON.stringify(e)}`).join(",\n");
    const open = JSON.stringify(head).slice(0, -1);
    return `    ${open},"events":[${events.length === 0 ? "" : `\n${steps}\n    `}]}`;
  });
  return `{\n  "schema": ${JSON.stringify(doc.schema)},\n  "description": ${
    JSON.stringify(doc.description)
  },\n` +
    `  "conversations": [\n${conversations.join(",\n")}\n  ]\n}\n`;
}

async function write(outDir: string, env: VectorsEnvironment, io: VectorsIo): Promise<number> {
  const dir = vectorsDir(env.root);
  if (dir === undefined) {
    io.stderr("nbd-codec: vectors/ not found (run from the package or a checkout)\n");
    return 2;
  }
  fs.mkdirSync(outDir, { recursive: true });
  const files = fs.readdirSync(dir).filter((n) => n.endsWith(".json") || n === "README.md").sort();
  let vectors = 0;
  for (const f of files) {
    const text = fs.readFileSync(path.join(dir, f), "utf8");
    if (f.endsWith(".json") && f !== "schema.json") {
      vectors += (JSON.parse(text) as { vectors: unknown[] }).vectors.length;
    }
    fs.writeFileSync(path.join(outDir, f), text);
  }
  fs.copyFileSync(path.join(dir, "conversation", "schema.json"), path.join(outDir, CONVERSATION_SCHEMA_FILE));
  const conversations = captureConversations(dir);
  const doc = {
    schema: CONVERSATION_VECTOR_SCHEMA_ID,
    description:
      "Whole NBD conversations between real peers (the bundled captures): each direction's bytes, and every frame and notice a decoder must find in them, in causal order, with its findings and the negotiated state after it. Frames are written as the frame vectors write them (64-bit values as decimal strings, bytes as hex).",
    conversations,
  };
  fs.writeFileSync(path.join(outDir, CONVERSATIONS_FILE), conversationsText(doc));
  const steps = conversations.reduce((n, c) => n + c.events.length, 0);
  await io.stdout(
    `wrote ${files.length} files (${vectors} frame vectors, their schema and README), ${CONVERSATIONS_FILE} ` +
      `(${conversations.length} conversations, ${steps} steps) and ${CONVERSATION_SCHEMA_FILE} to ${outDir}\n`,
  );
  return 0;
}

async function check(file: string, json: boolean, io: VectorsIo): Promise<number> {
  let doc: unknown;
  try {
    doc = JSON.parse(fs.readFileSync(file === "-" ? 0 : file, "utf8"));
  } catch (e) {
    io.stderr(
      `nbd-codec: cannot read ${file}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}\n`,
    );
    return 2;
  }
  const conversation = doc !== null && typeof doc === "object" &&
    (doc as { schema?: unknown }).schema === CONVERSATION_VECTOR_SCHEMA_ID;
  const report: VectorCheckReport = conversation ? checkConversationVectorFile(doc) : checkVectorFile(doc);
  if (json) {
    await io.stdout(
      JSON.stringify({ file, kind: conversation ? "conversations" : "vectors", ...report }) + "\n",
    );
  } else {
    const lines = report.problems.map((p) =>
      `${file}: ${p.id !== undefined ? `${p.id}: ` : ""}${p.message}\n`
    );
    const what = conversation ? "conversations" : "vectors";
    lines.push(
      report.ok
        ? `${file}: ${report.vectors} ${what}, every one agrees with nbd-codec's decoders\n`
        : `${file}: ${report.problems.length} problem(s) in ${report.vectors} ${what}\n`,
    );
    await io.stdout(lines.join(""));
  }
  return report.ok ? 0 : 1;
}

/**
 * Runs `nbd-codec vectors ARGS`; returns the exit status.
 *
 * @example
 * ```ts
 * import { vectorsCommand } from "./vectors.ts";
 * const code = await vectorsCommand(["--help"], { stdout: (t) => void t, stderr: (t) => void t });
 * console.log(code); // 0
 * ```
 */
export async function vectorsCommand(
  args: readonly string[],
  io: VectorsIo,
  env: VectorsEnvironment = {},
): Promise<number> {
  let parsed: VectorsArgs | "help";
  try {
    parsed = parse(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.stderr(`nbd-codec: ${e.message} (try nbd-codec vectors --help)\n`);
    return 2;
  }
  if (parsed === "help") {
    await io.stdout(USAGE);
    return 0;
  }
  if (parsed.check !== undefined) return await check(parsed.check, parsed.json, io);
  try {
    return await write(parsed.out ?? DEFAULT_OUT, env, io);
  } catch (e) {
    io.stderr(
      `nbd-codec: cannot write vectors: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}\n`,
    );
    return 2;
  }
}
