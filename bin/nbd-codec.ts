#!/usr/bin/env node
/**
 * Entry point of the `nbd-codec` command: built into `dist/nbd-codec.cjs`, which the npm `bin`
 * (`dist/start.cjs`, from `bin/start.ts`) runs with a compile cache; under Deno `deno run -A bin/nbd-codec.ts
 * dissect`.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import * as v8 from "node:v8";
import { main } from "./cli.ts";

/** The package root: this script lives in `bin/` (source) or `dist/` (build), one level below it. */
function packageRoot(): string | undefined {
  const script = process.argv[1];
  if (script === undefined) return undefined;
  try {
    return path.dirname(path.dirname(fs.realpathSync(script)));
  } catch {
    return undefined;
  }
}

const UTF8 = new TextEncoder();

/** Waits `ms` milliseconds. */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Writes all of `bytes` to file descriptor `fd` with `fs.writeSync`, without Node's stream machinery (whose
 * loading alone is a few milliseconds of every run): waits and retries when a non-blocking pipe or terminal
 * is full (EAGAIN), and ends the process quietly when the reader went away (`nbd-codec dissect | head`).
 */
async function writeAll(fd: number, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) {
    try {
      at += fs.writeSync(fd, bytes, at, bytes.length - at);
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === "EAGAIN") await sleep(1);
      else if (code === "EPIPE") process.exit(0);
      else throw e;
    }
  }
}

/**
 * Standard input is something to read (a pipe, a socket or a file), not a terminal or a device such as
 * /dev/null: then `dissect` and `stats` read it when given no capture.
 */
function stdinIsInput(): boolean {
  try {
    const s = fs.fstatSync(0);
    return s.isFIFO() || s.isSocket() || s.isFile();
  } catch {
    return false;
  }
}

// V8 optimises a function once it has run some bytecode (its interrupt budget, 66 KB by default). A run
// over a capture of few, large packets (a 100 MB loopback capture has 4 569) ends before most optimised
// code pays for its compiling, which then costs a third of the run's CPU time on two cores. Runs start with
// four times the budget, and go back to the default once the capture turns out to be long (cli.ts,
// WARM_PACKETS: optimising pays). Not when the user set the budget; a runtime without V8 flags just keeps its default.
const DEFAULT_BUDGET = "--interrupt-budget=67584";
const userBudget = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((a) =>
  a.includes("interrupt-budget")
);
function setBudget(flag: string): void {
  try {
    v8.setFlagsFromString(flag);
  } catch {
    // Not supported here.
  }
}
if (!userBudget) setBudget("--interrupt-budget=270336");

// SIGINT and SIGTERM end a run after it wrote what it decoded (exit 0); a second one ends it at once.
const interrupt = new AbortController();
const onSignal = (signal: NodeJS.Signals): void => {
  if (interrupt.signal.aborted) process.exit(signal === "SIGINT" ? 130 : 143);
  interrupt.abort();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

main(process.argv.slice(2), {
  stdout: (text) => writeAll(1, UTF8.encode(text)),
  // Synchronous unless the pipe is full: the CLI reuses the buffer once this settles.
  stdoutBytes: (bytes) => writeAll(1, bytes),
  stderr: (text) => void writeAll(2, UTF8.encode(text)).catch(() => {}),
}, {
  root: packageRoot(),
  stdinIsInput: stdinIsInput(),
  signal: interrupt.signal,
  ...(userBudget ? {} : { warm: () => setBudget(DEFAULT_BUDGET) }),
}).then(
  (code) => {
    process.exitCode = code;
    // A read of standard input may still wait on the thread pool; the run is over.
    if (interrupt.signal.aborted) process.exit(code);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  },
  (e: unknown) => {
    process.stderr.write(
      `nbd-codec: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exitCode = 2;
  },
);
