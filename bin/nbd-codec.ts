#!/usr/bin/env node
/**
 * Entry point of the `nbd-codec` command: built into `dist/nbd-codec.cjs`, which the npm `bin`
 * (`dist/start.cjs`, from `bin/start.ts`) runs with a compile cache; under Deno `deno run -A bin/nbd-codec.ts
 * dissect`.
 *
 * @module
 */
import { fstatSync, realpathSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import process from "node:process";
import { COLD_MIN_BYTES, startCold, stayCold, warmUp } from "./_budget.ts";
import { takePrefetch } from "./_readahead.ts";
import { type InterruptSignal, main } from "./cli.ts";

/** The package root: this script lives in `bin/` (source) or `dist/` (build), one level below it. */
function packageRoot(): string | undefined {
  const script = process.argv[1];
  if (script === undefined) return undefined;
  try {
    return dirname(dirname(realpathSync(script)));
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
      at += writeSync(fd, bytes, at, bytes.length - at);
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
    const s = fstatSync(0);
    return s.isFIFO() || s.isSocket() || s.isFile();
  } catch {
    return false;
  }
}

/**
 * SIGINT or SIGTERM, as the command line's `signal`: what it uses of an AbortSignal, without loading Node's
 * AbortController (about 2 M instructions of module loading at every start, bench/RESULTS.md).
 */
class Interrupt implements InterruptSignal {
  aborted = false;
  readonly #listeners: (() => void)[] = [];

  addEventListener(_type: "abort", listener: () => void): void {
    if (this.aborted) return;
    this.#listeners.push(listener);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    for (const listener of this.#listeners.splice(0)) listener();
  }
}

// SIGINT and SIGTERM end a run after it wrote what it decoded (exit 0); a second one ends it at once.
const interrupt = new Interrupt();
const onSignal = (signal: NodeJS.Signals): void => {
  if (interrupt.aborted) process.exit(signal === "SIGINT" ? 130 : 143);
  interrupt.abort();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

/** Writes to standard error not yet done (its pipe was full): the process must not end before them. */
let stderrPending = 0;

main(process.argv.slice(2), {
  stdout: (text) => writeAll(1, UTF8.encode(text)),
  // Synchronous unless the pipe is full: the CLI reuses the buffer once this settles.
  stdoutBytes: (bytes) => writeAll(1, bytes),
  stderr: (text) => {
    stderrPending++;
    void writeAll(2, UTF8.encode(text)).catch(() => {}).finally(() => stderrPending--);
  },
}, {
  root: packageRoot(),
  stdinIsInput: stdinIsInput(),
  signal: interrupt,
  // A larger V8 interrupt budget for capture files, until the capture turns out to be long (_budget.ts).
  budget: { minBytes: COLD_MIN_BYTES, cold: startCold, warm: warmUp, short: stayCold },
  // The capture file's first reads, when the npm bin (start.ts) started them.
  prefetch: takePrefetch(),
}).then(
  (code) => {
    process.exitCode = code;
    // A read of standard input may still wait on the thread pool; the run is over.
    if (interrupt.aborted) process.exit(code);
    // dissect and stats have written everything (standard output synchronously, reads settled): ending here
    // skips Node's teardown of what the run leaves behind, about 1 ms of the sample capture's 37. Other
    // commands (conform's sockets and child processes) end as Node ends them.
    const command = process.argv[2];
    if ((command === "dissect" || command === "stats") && stderrPending === 0) process.exit(code);
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
