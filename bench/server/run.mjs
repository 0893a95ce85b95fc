// End-to-end server benchmark (issue 12): the example server (examples/server.ts, built on ServerSession,
// bundled with esbuild and run on Node) against nbdkit's memory plugin, same size, same data (256 MiB
// written beforehand with nbdcopy from nbdkit's pattern plugin), one connection, in the same run:
//
//   nbdcopy --connections=1 --request-size=4096   --requests=64 URI null:
//   nbdcopy --connections=1 --request-size=262144 --requests=16 URI null:
//
// Each copy runs ROUNDS times, the servers taking turns (the order rotates each round); the figure of each
// side is its median time, and the ratio is nbdkit's time over ours (our throughput as a fraction of
// nbdkit's: 1.0 = as fast). The paired ratio is the median of each round's ratio (the two copies of a round
// run back to back, under much the same load from other tenants). Beside wall time it prints each server's CPU time per copy (user + system, from
// /proc), which other tenants of a shared machine disturb less, and the load average before and after.
//
//   npm run bench:server [-- --rounds=5 --size-mib=256 --json --against=REV]
//
// --against=REV adds the example server of git revision REV (e.g. HEAD~3, main) as a third server in the
// same rounds: an A/B comparison of a change under the same load.
//
// Installs nothing: it says which tool is missing and exits 2.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
const opt = (name, def) =>
  Number(args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? def);
const ROUNDS = opt("rounds", 5);
const SIZE_MIB = opt("size-mib", 256);
const json = args.includes("--json");
const against = args.find((a) => a.startsWith("--against="))?.slice("--against=".length);
const log = (m) => process.stderr.write(`${m}\n`);

const missing = ["nbdkit", "nbdcopy"].filter((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0);
for (const plugin of ["memory", "pattern"]) {
  if (missing.includes("nbdkit")) break;
  if (spawnSync("nbdkit", [plugin, "--dump-plugin"], { stdio: "ignore" }).status !== 0) {
    missing.push(`nbdkit ${plugin} plugin`);
  }
}
if (missing.length > 0) {
  log(
    `bench:server needs ${
      missing.join(", ")
    } (Debian: apt-get install nbdkit libnbd-bin; see ../shared/peers)`,
  );
  process.exit(2);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts a process and waits for a line matching `ready` on stdout (or for the port to accept). */
function start(cmd, argv, ready) {
  const p = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  p.stderr.on("data", (b) => (err += b));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start: ${err}`)), 60_000);
    p.stdout.on("data", (b) => {
      out += b;
      const m = out.match(ready);
      if (m) {
        clearTimeout(timer);
        resolve({ proc: p, match: m });
      }
    });
    p.once("exit", (code) => reject(new Error(`${cmd} exited with ${code}: ${err}`)));
  });
}

function run(cmd, argv) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, argv, { encoding: "utf8" });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(" ")} failed: ${r.stderr}`);
  return ms;
}

/** CPU time (user + system) a process has used so far, in ms (Linux /proc; 10 ms resolution). */
function cpuMs(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return NaN;
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const load = () => loadavg().map((l) => l.toFixed(1)).join(" ");
const tmp = mkdtempSync(join(tmpdir(), "nbd-bench-server-"));
const procs = [];
try {
  const { build } = await import("esbuild");
  const size = SIZE_MIB * 1024 * 1024;
  /** Bundles examples/server.ts of the tree at `dir` and starts it on Node. */
  const startOurs = async (dir, name) => {
    // The bundle's name ends in server.mjs: that is how the example knows it is the entry script.
    const bundle = join(tmp, name, "server.mjs");
    await build({
      entryPoints: [join(dir, "examples/server.ts")],
      outfile: bundle,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      logLevel: "error",
    });
    const s = await start(
      process.execPath,
      [bundle, "--port", "0", "--size", String(size), "--quiet"],
      /listening 127\.0\.0\.1:(\d+)/,
    );
    procs.push(s.proc);
    return { name, uri: `nbd://127.0.0.1:${s.match[1]}/disk`, pid: s.proc.pid };
  };
  const servers = [await startOurs(root, "ours")];
  if (against !== undefined) {
    const dir = join(tmp, "tree");
    mkdirSync(dir);
    execFileSync("sh", ["-c", `git -C "$0" archive "$1" | tar -x -C "$2"`, root, against, dir]);
    servers.push(await startOurs(dir, `ours@${against}`));
  }
  const kitPort = await freePort();
  const kit = spawn("nbdkit", [
    "-f",
    "--exit-with-parent",
    "-i",
    "127.0.0.1",
    "-p",
    String(kitPort),
    "memory",
    `${size}`,
  ], {
    stdio: "ignore",
  });
  procs.push(kit);
  const kitUri = `nbd://127.0.0.1:${kitPort}`;
  servers.push({ name: "nbdkit", uri: kitUri, pid: kit.pid });
  for (let i = 0; i < 100 && spawnSync("nbdinfo", ["--size", kitUri]).status !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  log(`filling each server with ${SIZE_MIB} MiB from nbdkit's pattern plugin`);
  for (const { uri } of servers) {
    run("nbdkit", ["-U", "-", "pattern", `${size}`, "--run", `nbdcopy "$uri" ${uri}`]);
  }
  const configs = [
    { name: "4k", args: ["--connections=1", "--request-size=4096", "--requests=64"] },
    { name: "256k", args: ["--connections=1", "--request-size=262144", "--requests=16"] },
  ];
  const results = [];
  const loadBefore = load();
  for (const c of configs) {
    const times = servers.map(() => []);
    const cpu = servers.map(() => []);
    // One warm-up each (JIT, page cache), then take turns, the order rotating each round.
    for (const { uri } of servers) run("nbdcopy", [...c.args, uri, "null:"]);
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < servers.length; k++) {
        const i = (k + r) % servers.length;
        const c0 = cpuMs(servers[i].pid);
        times[i].push(run("nbdcopy", [...c.args, servers[i].uri, "null:"]));
        cpu[i].push(cpuMs(servers[i].pid) - c0);
      }
    }
    const kit = servers.length - 1;
    const kitMs = median(times[kit]);
    for (let i = 0; i < kit; i++) {
      const oursMs = median(times[i]);
      results.push({
        config: c.name,
        server: servers[i].name,
        command: `nbdcopy ${c.args.join(" ")} URI null:`,
        oursMs: Math.round(oursMs),
        nbdkitMs: Math.round(kitMs),
        oursMiBs: Math.round(SIZE_MIB / (oursMs / 1000)),
        nbdkitMiBs: Math.round(SIZE_MIB / (kitMs / 1000)),
        ratio: Number((kitMs / oursMs).toFixed(2)),
        pairedRatio: Number(median(times[i].map((t, r) => times[kit][r] / t)).toFixed(2)),
        oursCpuMs: median(cpu[i]),
        nbdkitCpuMs: median(cpu[kit]),
        oursRangeMs: [Math.round(Math.min(...times[i])), Math.round(Math.max(...times[i]))],
        nbdkitRangeMs: [Math.round(Math.min(...times[kit])), Math.round(Math.max(...times[kit]))],
        goal: c.name === "4k" ? ">= 1.0" : ">= 0.8",
      });
    }
  }
  const loadAfter = load();
  if (json) { for (const r of results) console.log(JSON.stringify({ ...r, loadBefore, loadAfter })); }
  else {
    console.log(
      `example server (Node ${process.version}) vs nbdkit memory, ${SIZE_MIB} MiB, ${ROUNDS} rounds, medians; ` +
        `load average ${loadBefore} before, ${loadAfter} after`,
    );
    for (const r of results) {
      console.log(
        `${r.config.padEnd(5)} ${r.server} ${r.oursMs} ms (${r.oursMiBs} MiB/s) nbdkit ${r.nbdkitMs} ms ` +
          `(${r.nbdkitMiBs} MiB/s) ratio ${r.ratio} (goal ${r.goal}, paired ${r.pairedRatio}) ranges ${
            r.oursRangeMs.join("-")
          } / ` +
          `${r.nbdkitRangeMs.join("-")} ms, server CPU ${r.oursCpuMs} / ${r.nbdkitCpuMs} ms`,
      );
    }
  }
} finally {
  for (const p of procs) p.kill("SIGTERM");
  rmSync(tmp, { recursive: true, force: true });
}
