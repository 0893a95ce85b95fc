/**
 * Helpers for the interop tests: finding peers, free ports on 127.0.0.1, processes stopped by their own
 * PID, commands with a bounded time, our example server, and tcpdump captures of every conversation.
 *
 * Peers are the real NBD implementations listed in `../shared/peers/README.md`. In CI (`CI=true`) a
 * missing peer fails its suite; elsewhere the suite is skipped with a message saying how to install them.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";

export const ROOT: string = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const HERE: string = dirname(fileURLToPath(import.meta.url));
export const IN_CI: boolean = process.env.CI === "true";

/** `nbdsh` runs the `python3` first on PATH, which must be Debian's (it has the `nbd` module). */
export const PEER_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ""}`,
  LC_ALL: "C",
};

/** The Deno binary of the devDependencies; our example server runs on it. */
export const DENO: string = join(ROOT, "node_modules", ".bin", "deno");
export const VITE_NODE: string = join(ROOT, "node_modules", ".bin", "vite-node");

const found = new Map<string, boolean>();
/** `NBD_INTEROP_HIDE=qemu-nbd,nbdkit` pretends those peers are missing (to check the skip/fail paths). */
const hidden = new Set((process.env.NBD_INTEROP_HIDE ?? "").split(",").filter((x) => x !== ""));

/** Whether a peer command (or `python3-nbd`, the libnbd Python module) is installed. */
export function hasPeer(name: string): boolean {
  if (hidden.has(name)) return false;
  let ok = found.get(name);
  if (ok === undefined) {
    if (name === "python3-nbd") {
      ok =
        spawnSync("/usr/bin/python3", ["-c", "import nbd"], { env: PEER_ENV, timeout: 10_000 }).status === 0;
    } else {
      ok = ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"].some((d) =>
        existsSync(join(d, name))
      );
    }
    found.set(name, ok);
  }
  return ok;
}

const HOW_TO =
  "install the peers with `bash ../shared/peers/install-peers.sh`, then run `npm run test:interop`";

/**
 * A `describe` that needs peers. Missing peers: a failing test in CI, a skipped suite (with the reason
 * printed) elsewhere.
 */
export function describePeers(title: string, peers: readonly string[], fn: () => void): void {
  const missing = peers.filter((p) => !hasPeer(p));
  if (missing.length === 0) {
    describe(title, fn);
    return;
  }
  if (IN_CI) {
    describe(title, () => {
      test(`peers are installed (${peers.join(", ")})`, () => {
        throw new Error(`missing peers in CI: ${missing.join(", ")}; ${HOW_TO}`);
      });
    });
    return;
  }
  console.log(`interop SKIPPED: ${title}: missing ${missing.join(", ")}; ${HOW_TO}`);
  describe.skip(`${title} (skipped: missing ${missing.join(", ")})`, fn);
}

/** A TCP port that is free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolvePort(port));
    });
  });
}

/** Waits until something accepts connections on 127.0.0.1:port (connecting is enough for every peer). */
export async function waitPort(port: number, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      // `ss` would avoid a probe connection, but a probe that closes at once is harmless for every peer
      // we use, and works where `ss` is missing.
      const r = spawnSync("ss", ["-Hltn", `sport = :${port}`], { encoding: "utf8", timeout: 5000 });
      if (r.status === 0) return res(r.stdout.trim() !== "");
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        res(true);
      });
      s.once("error", () => res(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await sleep(100);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const running = new Set<ChildProcess>();
// Whatever happens to the test worker, the processes it started die with it (by their own PID).
process.once("exit", () => {
  for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

/** A running process, stopped by its own PID (SIGTERM, then SIGKILL after 5 s). */
export class Proc {
  readonly child: ChildProcess;
  readonly label: string;
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;

  constructor(
    label: string,
    cmd: string,
    args: readonly string[],
    options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
  ) {
    this.label = label;
    this.child = spawn(cmd, args, {
      env: options.env ?? PEER_ENV,
      cwd: options.cwd ?? ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout!.setEncoding("utf8").on("data", (d: string) => (this.stdout += d));
    this.child.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    running.add(this.child);
    this.exited = new Promise((res) => {
      this.child.once("exit", (code) => {
        running.delete(this.child);
        res(code);
      });
      this.child.once("error", (e) => {
        this.stderr += String(e);
        res(-1);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until stdout matches; throws (with stderr) on exit or timeout. */
  async waitFor(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const m = this.stdout.match(re);
      if (m) return m;
      if (!this.running) throw new Error(`${this.label} exited: ${this.stderr.slice(-2000)}`);
      if (Date.now() > until) {
        throw new Error(`${this.label}: timed out waiting for ${re}: ${this.stderr.slice(-2000)}`);
      }
      await sleep(50);
    }
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined || !this.running) return;
    this.child.kill(signal);
    const t = setTimeout(() => {
      if (this.running) this.child.kill("SIGKILL");
    }, 5000);
    await this.exited;
    clearTimeout(t);
  }
}

/** Result of {@link run}. */
export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command with a bounded time (killed by its PID at the deadline); never throws on failure. */
export function run(
  cmd: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((res) => {
    const child = spawn(cmd, args, {
      env: options.env ?? PEER_ENV,
      cwd: options.cwd ?? ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const t = setTimeout(() => {
      stderr += `\n[killed after ${options.timeoutMs ?? 60_000} ms]`;
      child.kill("SIGKILL");
    }, options.timeoutMs ?? 60_000);
    child.once("error", (e) => {
      clearTimeout(t);
      res({ code: -1, stdout, stderr: stderr + String(e) });
    });
    child.once("close", (code) => {
      running.delete(child);
      clearTimeout(t);
      res({ code, stdout, stderr });
    });
  });
}

/** Like {@link run}, but throws with the output when the exit code is not 0. */
export async function runOk(
  cmd: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} exited ${r.code}\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`,
    );
  }
  return r;
}

// ---------------------------------------------------------------------------------------------------------
// Temp files and captures

let workDir: string | undefined;

/** The run's directory: `captures/` (kept) and `work/` (images; scripts/interop.sh removes it). */
export function interopDir(): string {
  if (workDir === undefined) {
    const fromEnv = process.env.NBD_INTEROP_DIR;
    if (fromEnv !== undefined && fromEnv !== "") {
      mkdirSync(fromEnv, { recursive: true });
      workDir = fromEnv;
    } else workDir = mkdtempSync(join(tmpdir(), "nbd-interop-"));
  }
  return workDir;
}

/** A fresh scratch directory for one suite (in the run's `work/`). */
export function suiteDir(name: string): string {
  const work = join(interopDir(), "work");
  mkdirSync(work, { recursive: true });
  return mkdtempSync(join(work, `${name}-`));
}

/** A tcpdump capture of one port on lo. */
export interface Capture {
  readonly path: string;
  stop(): Promise<string>;
}

/** File in `<run dir>/captures/` listing every capture the tests started, one JSON object a line. */
export const CAPTURE_INDEX = "index.jsonl";

/** One line of {@link CAPTURE_INDEX}: which test made which capture (read by dissect-captures.test.ts). */
export interface CaptureIndexEntry {
  /** The capture's name (its file is `NAME.pcap`). */
  readonly name: string;
  /** The test that made it (`file > describe > test`). */
  readonly test: string;
  /** The server port captured. */
  readonly port: number;
  /** `true` when there was no tcpdump (allowed outside CI only): no file was written. */
  readonly skipped?: boolean;
}

function indexCapture(dir: string, entry: CaptureIndexEntry): void {
  appendFileSync(join(dir, CAPTURE_INDEX), JSON.stringify(entry) + "\n");
}

function currentTest(): string {
  try {
    const s = expect.getState();
    return [s.testPath?.replace(`${ROOT}/`, ""), s.currentTestName].filter(Boolean).join(" > ");
  } catch {
    return "?";
  }
}

/**
 * Starts tcpdump on lo for `tcp port PORT`, writing `<run dir>/captures/NAME.pcap`, and lists it in
 * `captures/index.jsonl` with the test that made it (the dissection test reads that list). Without tcpdump
 * (only allowed outside CI) the capture is a no-op that says so.
 */
export async function startCapture(name: string, port: number): Promise<Capture> {
  const dir = join(interopDir(), "captures");
  mkdirSync(dir, { recursive: true });
  const file = name.replace(/[^a-zA-Z0-9_.-]+/g, "-");
  const path = join(dir, `${file}.pcap`);
  if (!hasPeer("tcpdump")) {
    if (IN_CI) throw new Error("tcpdump is missing in CI");
    indexCapture(dir, { name: file, test: currentTest(), port, skipped: true });
    return { path, stop: () => Promise.resolve(`capture skipped (no tcpdump): ${name}`) };
  }
  indexCapture(dir, { name: file, test: currentTest(), port });
  // 64 KiB loopback segments need a larger buffer than tcpdump's default (peers README).
  const p = new Proc(`tcpdump ${name}`, "tcpdump", [
    "-i",
    "lo",
    "--immediate-mode",
    "-B",
    "131072",
    "-U",
    "-n",
    "-w",
    path,
    `tcp port ${port}`,
  ]);
  const until = Date.now() + 10_000;
  while (!/listening on/.test(p.stderr)) {
    if (!p.running) throw new Error(`tcpdump failed: ${p.stderr}`);
    if (Date.now() > until) throw new Error(`tcpdump did not start: ${p.stderr}`);
    await sleep(20);
  }
  return {
    path,
    async stop(): Promise<string> {
      await sleep(200);
      await p.stop("SIGINT");
      const packets = p.stderr.match(/(\d+) packets captured/)?.[1] ?? "?";
      const dropped = p.stderr.match(/(\d+) packets dropped by kernel/)?.[1] ?? "0";
      const line = `pcap: ${path} (${packets} packets${dropped === "0" ? "" : `, ${dropped} DROPPED`})`;
      console.log(line);
      return line;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Our example server

/** Our example server, running on Deno (or Node through vite-node) as a separate process. */
export interface OurServer {
  readonly port: number;
  readonly proc: Proc;
  /** Option names the server logged, in order (its stderr), e.g. `NBD_OPT_EXTENDED_HEADERS`. */
  options(): string[];
  stop(): Promise<void>;
}

export async function startOurServer(
  args: readonly string[],
  runtime: "deno" | "node" = "deno",
): Promise<OurServer> {
  const script = "examples/server.ts";
  const proc = runtime === "deno"
    ? new Proc("our server (deno)", DENO, ["run", "-A", script, "--port", "0", ...args])
    : new Proc("our server (node)", VITE_NODE, [script, "--", "--port", "0", ...args]);
  const m = await proc.waitFor(/listening 127\.0\.0\.1:(\d+)/, 60_000);
  return {
    port: Number(m[1]),
    proc,
    options: () => [...proc.stderr.matchAll(/\[server\] option (\S+)/g)].map((x) => x[1]!),
    stop: () => proc.stop(),
  };
}

/** sha256 of a file. */
export function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

export function fileSize(path: string): number {
  return statSync(path).size;
}

/** Deterministic bytes (xorshift32), the same as the Python helpers make. */
export function randomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= (x << 13) >>> 0;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= (x << 5) >>> 0;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
