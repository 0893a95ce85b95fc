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

let runs = 0;

/**
 * All checks of the command line on one capture file. `bundleEvery`: every so many runs, the same input
 * also goes through the built bundle (0: never).
 */
export async function checkCli(b: Uint8Array, features: Set<string>, bundleEvery: number): Promise<void> {
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
