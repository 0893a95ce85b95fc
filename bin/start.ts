#!/usr/bin/env node
/**
 * The npm `bin` of the `nbd-codec` command (`dist/start.cjs`): runs the bundled command line
 * (`dist/nbd-codec.cjs`, built from `bin/nbd-codec.ts`) with a V8 code cache, so that a run does not parse
 * and compile the same 180 KB of JavaScript again: on this machine kind a run on the sample capture takes
 * 29-30 ms with the cache and 36-38 ms without (and 49 ms for the ESM build of the same command).
 *
 * - Node 22.1 and later: `module.enableCompileCache()`, Node's own cache.
 * - Node 20 and 21: the bundle is compiled with `vm.Script` and the cached data of an earlier run; after a
 *   `dissect` run without usable cached data, the data (with every function that run compiled) is written
 *   for the next one.
 * - Deno, or when `NODE_DISABLE_COMPILE_CACHE` is set: the bundle is only `require`d.
 *
 * The cache lives in `NODE_COMPILE_CACHE` when set, else in the user's cache directory
 * (`$XDG_CACHE_HOME/nbd-codec` or `~/.cache/nbd-codec`, `~/Library/Caches/nbd-codec` on macOS,
 * `%LOCALAPPDATA%\nbd-codec` on Windows), created readable by the user alone. A file's name holds the
 * Node version, the architecture, the bundle's identity (device, inode, size and change time, which a
 * rebuild or reinstall changes) and the kind of run (`runKind`: a capture file of 4 MiB or more predicted
 * short or long, or anything else), and V8 checks its own version, flags and the source length, so a stale
 * file is not used. Any failure to read or write the cache only means no cache.
 *
 * Before all that, for `dissect` or `stats` of a capture file of 4 MiB or more, it starts the file's first
 * reads on the thread pool (`bin/_readahead.ts`, `prefetchCapture`), which the command line then adopts.
 * `NODE_DEBUG=nbd-codec` says what the cache did, and which file was read ahead.
 *
 * @module
 */
import { Buffer, isAscii } from "node:buffer";
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { Script } from "node:vm";
import { budgetChanged, COLD_MIN_BYTES, DEFAULT_BUDGET, v8Flags } from "./_budget.ts";
import { limitReadThreads, predictsLong, type Prefetch, prefetchCapture } from "./_readahead.ts";

const args = process.argv.slice(2);
// First of all, the first reads of a capture file to dissect: the thread pool copies them while the rest of
// this file compiles and runs the command line (bin/_readahead.ts, Prefetch). The capture's reads are the
// pool's only work: its threads (readThreads, from the file's first headers) are set before its first use.
const prefetching = prefetchCapture(
  args,
  COLD_MIN_BYTES,
  (sniff) => limitReadThreads(args, process.env, sniff),
);

/** Cache files kept in the directory; older ones (other versions or Node releases) are removed. */
const KEEP_FILES = 8;

// This file is CommonJS once built (dist/start.cjs): its own `require` serves the bundle beside it too.
// Neither node:module (for createRequire) nor node:os (for homedir) is loaded on the way: on Node 20 they
// cost a run about 5 M and 2 M instructions of module loading (bench/RESULTS.md); the sample's is 126 M.

/** The user's home directory: `$HOME` (USERPROFILE on Windows), as os.homedir() reads it first. */
function homedir(): string {
  const env = process.env;
  const home = process.platform === "win32" ? env.USERPROFILE : env.HOME;
  return home || (require("node:os") as typeof import("node:os")).homedir();
}

/** The directory for cached data, or undefined when caching is off or no place is known. */
function cacheDirectory(): string | undefined {
  const env = process.env;
  if (env.NODE_DISABLE_COMPILE_CACHE) return undefined;
  if (env.NODE_COMPILE_CACHE) return env.NODE_COMPILE_CACHE;
  let base: string | undefined;
  if (process.platform === "win32") base = env.LOCALAPPDATA;
  else if (process.platform === "darwin") base = join(homedir(), "Library", "Caches");
  else base = env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return base ? join(base, "nbd-codec") : undefined;
}

/**
 * With `NODE_DEBUG=nbd-codec`, says on standard error what the cache did, and which capture file was read
 * ahead (for tests and curious users).
 */
function debug(what: string, topic = "compile cache"): void {
  if (/\bnbd-codec\b/.test(process.env.NODE_DEBUG ?? "")) {
    writeSync(2, `nbd-codec: ${topic} ${what}\n`);
  }
}

if (prefetching !== undefined) debug(prefetching.file, "prefetch of");

/** Reads a file, or undefined when it cannot be read. */
function readOrUndefined(file: string): Buffer | undefined {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

/** Writes `data` to `file` through a temporary file and a rename; keeps the newest {@link KEEP_FILES}. */
function store(dir: string, file: string, data: Uint8Array): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temporary = `${file}.${process.pid}.tmp`;
    writeFileSync(temporary, data, { mode: 0o600 });
    renameSync(temporary, file);
    debug(`written ${file}`);
    const cached = readdirSync(dir).filter((f) => f.endsWith(".v8cache"));
    if (cached.length > KEEP_FILES) {
      const byAge = cached
        .map((f) => ({ f, t: statSync(join(dir, f)).mtimeMs }))
        .sort((a, b) => b.t - a.t);
      for (const { f } of byAge.slice(KEEP_FILES)) rmSync(join(dir, f), { force: true });
    }
  } catch (e) {
    debug(`not written: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The wrapper Node puts around a CommonJS module. */
const WRAP_START = "(function (exports, require, module, __filename, __dirname) {";
const WRAP_END = "\n})";

/**
 * The bundle's source inside {@link WRAP_START} and {@link WRAP_END}, read into one buffer and made a string
 * once (Latin-1 when it is ASCII, as scripts/check.sh makes sure; else UTF-8): reading it as a string and
 * concatenating the wrapper made V8 copy the 580 KB twice more (the UTF-8 decoding, then flattening the
 * concatenation for the compiler), about 1 ms. A "#!" line becomes a comment (line numbers unchanged).
 * Also the file's status, for its identity.
 */
function wrappedSource(bundle: string): { source: string; stat: ReturnType<typeof fstatSync> } {
  const fd = openSync(bundle, "r");
  try {
    const stat = fstatSync(fd);
    const end = WRAP_START.length + stat.size;
    const b = Buffer.allocUnsafe(end + WRAP_END.length);
    b.write(WRAP_START, 0, "latin1");
    let at = WRAP_START.length;
    while (at < end) {
      const n = readSync(fd, b, at, end - at, null);
      if (n === 0) break;
      at += n;
    }
    if (b[WRAP_START.length] === 0x23 && b[WRAP_START.length + 1] === 0x21) {
      b[WRAP_START.length] = 0x2f;
      b[WRAP_START.length + 1] = 0x2f;
    }
    at += b.write(WRAP_END, at, "latin1");
    const bytes = b.subarray(0, at);
    return { source: bytes.toString(isAscii(bytes) ? "latin1" : "utf8"), stat };
  } finally {
    closeSync(fd);
  }
}

/**
 * Which runs share a code cache file. V8 caches the functions that the run that wrote it compiled, and a
 * run that needs others compiles them from source every time: a capture file of 4 MiB or more (prefetched)
 * goes through other paths than a small one, and one predicted long (optimised, the byte writer) through
 * others than one predicted short (kept cold, strings); `loopback-100m` with the cache of a run on the
 * sample capture ran 0.6% more instructions (about 0.5 ms) than with its own (bench/RESULTS.md, "Sixth
 * pass"). Each kind writes its own cache at its first run, which compiles from source: started from another
 * kind's cache, the kind's cache also held that kind's functions (`loopback-100m`: 0.25% more instructions).
 */
function runKind(prefetch: Prefetch | undefined): string {
  if (prefetch === undefined) return "";
  return predictsLong(prefetch.sniff) ? "-long" : "-short";
}

/** Runs the CommonJS `bundle` as `require` would, compiled with V8 cached data from `dir`. */
function runCached(bundle: string, dir: string): void {
  const { source, stat: s } = wrappedSource(bundle);
  // The bundle's identity: a reinstall or rebuild writes a new file (new inode, change time and usually
  // size). Hashing its content instead would load node:crypto, about 3 ms.
  const id = [s.dev, s.ino, s.size, s.ctimeMs].map((n) => n.toString(36)).join("-");
  const base = join(dir, `${process.version}-${process.arch}-${id}`);
  const kind = runKind(prefetching);
  const file = `${base}${kind}.v8cache`;
  // Only a dissect run compiles what later runs need (a --help run would cache little): the first dissect
  // run of a kind compiles from source and writes the kind's cache. Other commands (stats) use the small
  // captures' cache until then, and write none.
  const writes = args[0] === "dissect";
  const from = kind !== "" && !writes && !existsSync(file) ? `${base}.v8cache` : file;
  const cachedData = readOrUndefined(from);
  const script = new Script(source, { filename: bundle, cachedData });
  debug(`${cachedData === undefined ? "absent" : script.cachedDataRejected ? "rejected" : "used"} ${from}`);
  if (writes && (cachedData === undefined || script.cachedDataRejected === true)) {
    process.once("exit", (code) => {
      if (code <= 1) store(dir, file, script.createCachedData());
    });
  }
  const run = script.runInThisContext() as (
    exports: unknown,
    require: NodeJS.Require,
    module: { exports: unknown },
    filename: string,
    dirname: string,
  ) => void;
  const module = { exports: {} };
  run(module.exports, require, module, bundle, dirname(bundle));
}

// V8 checks a code cache against its flags, and reads it with the default interrupt budget: a run that
// still has a larger one (bin/_budget.ts) goes back to the default before a cache is written.
process.once("exit", () => {
  if (budgetChanged()) {
    (v8Flags() ?? (require("node:v8") as typeof import("node:v8"))).setFlagsFromString(DEFAULT_BUDGET);
  }
});

const here = dirname(realpathSync(process.argv[1] ?? "."));
const bundle = join(here, "nbd-codec.cjs");
const dir = "Deno" in globalThis ? undefined : cacheDirectory();
/** Node's own compile cache (`module.enableCompileCache`, Node 22.1 and later), else undefined. */
function nodeCompileCache(): ((dir?: string) => unknown) | undefined {
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  if (major < 22 || (major === 22 && minor < 1)) return undefined;
  // Through require: a namespace import of node:module would make the bundle copy the module's every
  // property (esbuild's interop for CommonJS modules), a quarter of a millisecond of every start.
  return (require("node:module") as { enableCompileCache?: (dir?: string) => unknown }).enableCompileCache;
}

const enable = dir === undefined ? undefined : nodeCompileCache();
if (dir === undefined) {
  debug("off");
  require(bundle);
} else if (enable !== undefined) {
  debug(`by Node in ${dir}`);
  enable(dir);
  require(bundle);
} else {
  runCached(bundle, dir);
}
