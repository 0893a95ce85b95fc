/**
 * The conformance matrix: `conform server` against qemu-nbd 10, nbdkit 1.32 (memory), nbd-server 3.24 and
 * our example server, each started here on 127.0.0.1 with a scratch export (writes allowed on all of it).
 *
 *   npx vite-node scripts/conform-matrix.ts -- --write docs/conformance.md   # run and rewrite the matrix
 *   npx vite-node scripts/conform-matrix.ts -- --check docs/conformance.md   # run and compare (exit 1 if not equal)
 *   npx vite-node scripts/conform-matrix.ts -- --print [--peer qemu-nbd]     # run and print the tables
 *
 * Also rewrites (--write) or checks (--check) the case catalogue section of the same file, generated from
 * SERVER_CASES. A committed cell may list several outcomes ("pass/fail") for a result that is
 * timing-dependent in that peer; every such cell is explained in the document.
 *
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import type { ConformResult } from "../codec/conform.ts";
import { runServerCases, SERVER_CASES } from "../codec/conform_server.ts";
import { SocketConnection } from "../bin/conform.ts";
import { parseMatrix, renderCatalogue, renderMatrix, replaceBlock } from "./conform-docs.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const SIZE = 64 * 1024 * 1024;
const ENV = { ...process.env, PATH: `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ""}` };

interface Peer {
  readonly id: string;
  readonly label: string;
  start(dir: string, port: number): Promise<() => Promise<void>>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (typeof a === "object" && a ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

async function waitPort(port: number, child?: ChildProcess): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (child && child.exitCode !== null) throw new Error(`exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

function spawnPeer(cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { env: ENV, cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
  child.stderr!.on("data", () => {});
  return child;
}

/** Stops a child we started, by its PID: SIGTERM, then SIGKILL after 5 s. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(t);
}

function image(dir: string): string {
  const img = path.join(dir, "disk.img");
  fs.writeFileSync(img, new Uint8Array(0));
  fs.truncateSync(img, SIZE);
  return img;
}

/** nbdkit on 127.0.0.1: `nbdkit -f [flags] -i 127.0.0.1 -p PORT PLUGIN-AND-PARAMS`. */
function nbdkitPeer(id: string, label: string, flags: string[], plugin: string[]): Peer {
  return {
    id,
    label,
    async start(_dir, port) {
      const c = spawnPeer("nbdkit", ["-f", ...flags, "-i", "127.0.0.1", "-p", String(port), ...plugin]);
      await waitPort(port, c);
      return () => stopChild(c);
    },
  };
}

const PEERS: readonly Peer[] = [
  {
    id: "qemu-nbd",
    label: "qemu-nbd 10.0",
    async start(dir, port) {
      const c = spawnPeer("qemu-nbd", [
        "-f",
        "raw",
        "-b",
        "127.0.0.1",
        "-p",
        String(port),
        "-x",
        "disk",
        "-A",
        "--shared=16",
        "-t",
        image(dir),
      ]);
      await waitPort(port, c);
      return () => stopChild(c);
    },
  },
  {
    id: "qemu-nbd-ro",
    label: "qemu-nbd 10.0 -r",
    async start(dir, port) {
      const c = spawnPeer("qemu-nbd", [
        "-f",
        "raw",
        "-b",
        "127.0.0.1",
        "-p",
        String(port),
        "-x",
        "disk",
        "-r",
        "--shared=16",
        "-t",
        image(dir),
      ]);
      await waitPort(port, c);
      return () => stopChild(c);
    },
  },
  nbdkitPeer("nbdkit", "nbdkit 1.32 memory", [], ["memory", String(SIZE)]),
  nbdkitPeer("nbdkit-ro", "nbdkit 1.32 memory -r", ["-r"], ["memory", String(SIZE)]),
  // Constraints none of the others advertise, on an export above 4 GiB: a minimum block size above 1
  // (tx.unaligned), a maximum payload below 2^25 (read.over-max) and room for a request of nearly 2^32
  // bytes inside the export (bs.length-max).
  nbdkitPeer("nbdkit-bs", "nbdkit 1.32 memory 8G, blocks 512/1M", ["--filter=blocksize-policy"], [
    "memory",
    String(8 * 1024 * 1024 * 1024),
    "blocksize-minimum=512",
    "blocksize-preferred=4096",
    "blocksize-maximum=1048576",
    "blocksize-error-policy=error",
  ]),
  {
    id: "nbd-server",
    label: "nbd-server 3.24",
    async start(dir, port) {
      const config = path.join(dir, "nbd-server.conf");
      const pidfile = path.join(dir, "nbd-server.pid");
      fs.writeFileSync(
        config,
        [
          "[generic]",
          `port = ${port}`,
          "listenaddr = 127.0.0.1",
          "allowlist = true",
          "[disk]",
          `exportname = ${image(dir)}`,
          "flush = true",
          "fua = true",
          "trim = true",
          "",
        ].join("\n"),
      );
      // Without -d nbd-server forks a daemon per connection; it writes its PID to pidfile, which we stop.
      const c = spawnPeer("nbd-server", ["-C", config, "-p", pidfile]);
      await waitPort(port);
      if (c.exitCode === null) await new Promise((r) => c.once("exit", r));
      return async () => {
        const pid = Number(fs.readFileSync(pidfile, "utf8").trim());
        if (pid > 1) {
          try {
            process.kill(pid, "SIGTERM");
          } catch { /* already gone */ }
        }
        for (let i = 0; i < 50; i++) {
          try {
            process.kill(pid, 0);
          } catch {
            return;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
        try {
          process.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      };
    },
  },
  {
    id: "example",
    label: "examples/server.ts",
    async start(_dir, port) {
      const bin = path.join(ROOT, "node_modules", ".bin", "vite-node");
      const c = spawnPeer(bin, [
        "examples/server.ts",
        "--",
        "--port",
        String(port),
        "--size",
        String(SIZE),
        "--name",
        "disk",
        "--quiet",
      ]);
      await waitPort(port, c);
      return () => stopChild(c);
    },
  },
];

async function runPeer(peer: Peer, timeoutMs: number): Promise<ConformResult[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `nbd-conform-${peer.id}-`));
  const port = await freePort();
  const stop = await peer.start(dir, port);
  try {
    return await runServerCases({
      connect: () => SocketConnection.connect({ host: "127.0.0.1", port, exportName: "disk" }, timeoutMs),
      exportName: "disk",
      writeRange: { offset: 0n },
    });
  } finally {
    await stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(args: string[]): Promise<number> {
  const mode = args.includes("--write") ? "write" : args.includes("--check") ? "check" : "print";
  const file = args[args.indexOf(`--${mode}`) + 1];
  const only = args.includes("--peer") ? args[args.indexOf("--peer") + 1] : undefined;
  const peers = PEERS.filter((p) => only === undefined || p.id === only);
  const results = new Map<string, ConformResult[]>();
  for (const p of peers) {
    const t = Date.now();
    const r = await runPeer(p, 3000);
    results.set(p.id, r);
    const s = { pass: 0, fail: 0, warn: 0, skip: 0 };
    for (const x of r) s[x.outcome]++;
    process.stderr.write(`conform-matrix: ${p.label}: ${JSON.stringify(s)} in ${Date.now() - t} ms\n`);
  }
  if (mode === "print" || file === undefined) {
    process.stdout.write(renderMatrix(SERVER_CASES, peers, results));
    for (const [id, rs] of results) {
      for (const r of rs) {
        if (r.outcome === "fail" || r.outcome === "warn") {
          process.stdout.write(`${id} ${r.id} ${r.outcome}: ${r.detail}\n`);
        }
      }
    }
    return 0;
  }
  const text = fs.readFileSync(file, "utf8");
  if (mode === "write") {
    let out = replaceBlock(text, "catalogue", renderCatalogue(SERVER_CASES));
    out = replaceBlock(out, "matrix", renderMatrix(SERVER_CASES, peers, results));
    fs.writeFileSync(file, out);
    // The tables as deno fmt lays them out, so that `deno fmt --check` stays clean.
    spawnSync(path.join(ROOT, "node_modules", ".bin", "deno"), ["fmt", file], {
      env: ENV,
      cwd: ROOT,
      stdio: "ignore",
    });
    for (const [id, rs] of results) {
      for (const r of rs) {
        if (r.outcome === "fail" || r.outcome === "warn") {
          process.stdout.write(`${id} ${r.id} ${r.outcome}: ${r.detail}\n`);
        }
      }
    }
    return 0;
  }
  const committed = parseMatrix(text);
  const diffs: string[] = [];
  for (const p of peers) {
    for (const r of results.get(p.id)!) {
      const allowed = committed.get(r.id)?.get(p.id);
      if (allowed === undefined) diffs.push(`${r.id} / ${p.id}: ${r.outcome}, not in the committed matrix`);
      else if (!allowed.includes(r.outcome)) {
        diffs.push(`${r.id} / ${p.id}: ${r.outcome} (${r.detail}), committed ${allowed.join("/")}`);
      }
    }
  }
  for (const id of committed.keys()) {
    if (!SERVER_CASES.some((c) => c.id === id)) diffs.push(`${id}: in the committed matrix but not a case`);
  }
  if (diffs.length) {
    process.stderr.write(
      `conform-matrix: ${diffs.length} results differ from ${file}:\n${
        diffs.map((d) => `  ${d}\n`).join("")
      }`,
    );
    return 1;
  }
  process.stderr.write(`conform-matrix: every result matches ${file}\n`);
  return 0;
}

main(process.argv.slice(2).filter((a) => a !== "--")).then((code) => process.exit(code), (e) => {
  process.stderr.write(`conform-matrix: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(2);
});
