#!/usr/bin/env node
/**
 * Entry point of the `nbd-codec` command: `node dist/nbd-codec.js dissect` (npm `bin`), or under Deno
 * `deno run -A bin/nbd-codec.ts dissect`.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
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

process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  // The reader went away (`nbd-codec dissect | head`): stop quietly.
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});

main(process.argv.slice(2), {
  stdout: (text) =>
    process.stdout.write(text)
      ? undefined
      : new Promise<void>((resolve) => process.stdout.once("drain", resolve)),
  stderr: (text) => void process.stderr.write(text),
}, { root: packageRoot() }).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(
      `nbd-codec: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exitCode = 2;
  },
);
