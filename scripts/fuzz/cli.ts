// Fuzz target of the command line, end to end: `nbd-codec dissect` on a mutated pcap or pcapng file, run in
// process (bin/cli.ts's main, as the tests do) and, for a sample of inputs, through the built npm bundle in
// a child process, whose exit status and output must be the same. Exit status is 0, 1 or 2; anything on
// standard error is one line per message, never a stack trace; nothing throws out of main.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { main } from "../../bin/cli.ts";
import { CaptureDissector } from "../../codec/dissector.ts";
import { formatEventJsonLine, isNbdDecodeError } from "../../mod.ts";
import type { TraceFinding } from "../../trace.ts";
import { Rng } from "./mutate.ts";
import { split } from "./streams.ts";
import { inputCpuMs, inputSeed, SLOW_INPUT_BYTES, SLOW_MS, Violation } from "./check.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
/** The npm bin: the built bundle (run `npm run build` first; the campaign does). */
export const BUNDLE: string = path.join(ROOT, "dist", "start.cjs");

let file: string | undefined;

function scratch(): string {
  if (file === undefined) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nbd-fuzz-"));
    file = path.join(dir, "input.pcap");
    process.on("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  return file;
}

/** The flags of a run, from the input's hash: text or JSON, with or without --strict. */
function flagsOf(b: Uint8Array): string[] {
  const h = inputSeed(b, 6);
  return [...(h & 1 ? ["--json"] : []), ...(h & 2 ? ["--strict"] : [])];
}

async function inProcess(args: string[]): Promise<{ status: number; stdout: string; stderr: string[] }> {
  let stdout = "";
  const stderr: string[] = [];
  const status = await main(args, {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr.push(t);
    },
  }, { root: ROOT });
  return { status, stdout, stderr };
}

function checkMessages(label: string, stderr: readonly string[]): void {
  for (const m of stderr) {
    const lines = m.split("\n").filter((l) => l !== "");
    if (lines.length !== 1 || !m.startsWith("nbd-codec: ") || /\n\s+at /.test(m)) {
      throw new Violation(
        "cli-message",
        `${label}: standard error is not a one-line message: ${JSON.stringify(m.slice(0, 400))}`,
      );
    }
  }
}

/** What the dissector reports for a capture pushed in these chunks: every event and finding, in order. */
function dissect(chunks: readonly Uint8Array[]): string[] {
  const out: string[] = [];
  const d = new CaptureDissector({
    event: (e) => void out.push(formatEventJsonLine(e)),
    traceFinding: (f: TraceFinding, c) =>
      void out.push(
        `finding ${c} ${f.code}/${f.rule}@${f.offset} p${f.packet} ${f.direction} ${f.streamOffset} ${f.length}`,
      ),
  });
  try {
    for (const c of chunks) d.push(c);
    d.end();
  } catch (e) {
    if (!isNbdDecodeError(e)) throw e;
    out.push(`error ${e.code}/${e.rule}@${e.offset}`);
  }
  return out;
}

/**
 * The dissector (codec/dissector.ts: capture reader, TCP reassembly, NBD recognition, conversation decoders)
 * reports the same events and findings whether the file comes whole, in random chunks or byte by byte.
 */
export function checkDissectorSplits(b: Uint8Array, features: Set<string>): void {
  const rng = new Rng(inputSeed(b, 7));
  const whole = dissect([b]);
  features.add(`dissect:events:${Math.min(whole.length, 8)}`);
  const variants: [string, Uint8Array[]][] = [["random split", split(rng, b).map((c) => c.slice())]];
  if (b.length <= 4096) variants.push(["byte by byte", Array.from(b, (x) => Uint8Array.of(x))]);
  for (const [how, chunks] of variants) {
    const got = dissect(chunks);
    if (got.join("\n") !== whole.join("\n")) {
      const i = whole.findIndex((x, j) => x !== got[j]);
      const at = i < 0 ? Math.min(whole.length, got.length) : i;
      throw new Violation(
        "dissect-split-mismatch",
        `the dissector's output for the capture ${how} differs from whole, at line ${at} of ${whole.length}/${got.length}:\n  A ${
          whole[at]?.slice(0, 400)
        }\n  B ${got[at]?.slice(0, 400)}`,
      );
    }
  }
}

let runs = 0;

/**
 * All checks of the command line on one capture file. `bundleEvery`: every so many runs, the same input
 * also goes through the built bundle (0: never).
 */
export async function checkCli(b: Uint8Array, features: Set<string>, bundleEvery: number): Promise<void> {
  checkDissectorSplits(b, features);
  const f = scratch();
  fs.writeFileSync(f, b);
  const args = ["dissect", f, ...flagsOf(b)];
  const t0 = performance.now();
  let r: { status: number; stdout: string; stderr: string[] };
  try {
    r = await inProcess(args);
  } catch (e) {
    const err = e as Error;
    throw new Violation(
      "cli-threw",
      `main(${args.slice(2).join(" ")}) threw ${err?.name}: ${err?.message}\n${
        err?.stack?.split("\n").slice(1, 4).join("\n")
      }`,
    );
  }
  const ms = performance.now() - t0;
  if (ms > SLOW_MS && b.length < SLOW_INPUT_BYTES && inputCpuMs() > SLOW_MS) {
    throw new Violation(
      "slow",
      `dissect ${args.slice(2).join(" ")}: ${Math.round(ms)} ms (${
        Math.round(inputCpuMs())
      } ms of CPU) for ${b.length} bytes`,
    );
  }
  if (![0, 1, 2].includes(r.status)) throw new Violation("cli-status", `dissect exited ${r.status}`);
  checkMessages("dissect", r.stderr);
  if (args.includes("--json")) {
    for (const line of r.stdout.split("\n")) {
      if (line === "") continue;
      try {
        JSON.parse(line);
      } catch {
        throw new Violation(
          "cli-json",
          `dissect --json printed a line that is not JSON: ${line.slice(0, 300)}`,
        );
      }
    }
  }
  features.add(`cli:status:${r.status}`);
  if (r.status === 2) {
    features.add(`cli:2:${r.stderr[0]?.replace(/^.*?: /, "").replace(/[0-9]+/g, "N").slice(0, 60)}`);
  }
  runs++;
  if (bundleEvery > 0 && runs % bundleEvery === 0 && fs.existsSync(BUNDLE)) {
    const c = spawnSync(process.execPath.includes("deno") ? "node" : process.execPath, [BUNDLE, ...args], {
      encoding: "utf8",
      timeout: 30_000,
      maxBuffer: 256 << 20,
    });
    if (c.error !== undefined) {
      throw new Violation("cli-bundle", `the bundle did not run: ${c.error.message}`);
    }
    if (c.status !== r.status) {
      throw new Violation(
        "cli-bundle",
        `the bundle exits ${c.status} (${c.stderr.slice(0, 300)}), main returns ${r.status}`,
      );
    }
    checkMessages("the bundle", c.stderr === "" ? [] : c.stderr.split(/(?<=\n)/));
    if (c.stdout !== r.stdout) {
      const i = [...c.stdout].findIndex((ch, j) => ch !== r.stdout[j]);
      throw new Violation("cli-bundle", `the bundle prints other output than main, from character ${i}`);
    }
    features.add("cli:bundle");
  }
}
