// Benchmark driver: `npm run bench` (table) or `npm run bench -- --json` (one JSON object per goal).
//
// Node 20 cannot run TypeScript, so the worker is bundled with esbuild into a temporary directory; Deno runs
// bench/worker.ts as it is. Each goal is measured in 5 separate processes per runtime; it reports the
// median over the processes and their range. Node 20 gates, Deno is reported beside it.
//
// Options: --json, --processes=N (default 5, per goal), --runtime=node,deno (default both), --only=id1,id2,
// --cpu-prof (node: write V8 CPU profiles of every worker process and print where).
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const json = args.includes("--json");
const processes = Number(opt("processes") ?? 5);
const runtimes = (opt("runtime") ?? "node,deno").split(",");
const only = opt("only");
const cpuProf = args.includes("--cpu-prof");

function log(msg) {
  process.stderr.write(msg + "\n");
}

const out = mkdtempSync(join(tmpdir(), "nbd-codec-bench-"));
await build({
  entryPoints: [join(root, "bench/worker.ts"), join(root, "bench/goals.ts")],
  outdir: out,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outExtension: { ".js": ".mjs" },
  // mitata's runner imports these lazily on other runtimes or when asked; the worker only uses measure().
  external: ["bun:jsc", "@mitata/counters"],
  logLevel: "error",
});
const { GOALS } = await import(pathToFileURL(join(out, "goals.mjs")).href);
const profDir = join(out, "cpu-profiles");
if (cpuProf) mkdirSync(profDir);

// Every goal runs in a process of its own, so that the codec functions it measures carry only its own type
// feedback (a reference is private to its goal; a codec function shared by several goals would otherwise be
// measured with the others' feedback). Timed goals run with the runtime's default flags; allocation goals
// with a fixed 64 MiB young generation so that no scavenge hides allocations (see bench/_harness.ts).
const ALLOC_FLAGS = ["--expose-gc", "--max-semi-space-size=64", "--min-semi-space-size=64"];

function isAllocGoal(g) {
  return g.kind === "alloc" || g.id.endsWith("-alloc");
}

function command(runtime, goal) {
  const part = isAllocGoal(goal) ? "alloc" : "timing";
  const extra = [`--part=${part}`, `--only=${goal.id}`];
  const v8 = part === "alloc" ? ALLOC_FLAGS : ["--expose-gc"];
  if (runtime === "node") {
    const flags = [...v8];
    if (cpuProf && part === "timing") flags.push("--cpu-prof", `--cpu-prof-dir=${profDir}`);
    return [process.execPath, [...flags, join(out, "worker.mjs"), ...extra]];
  }
  const deno = join(root, "node_modules/.bin/deno");
  return [deno, ["run", "-A", `--v8-flags=${v8.join(",")}`, join(root, "bench/worker.ts"), ...extra]];
}

function spawnWorker(runtime, goal) {
  const [cmd, argv] = command(runtime, goal);
  const r = spawnSync(cmd, argv, { cwd: root, encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    log(r.stderr);
    throw new Error(`${runtime} worker (${goal.id}) exited with ${r.status ?? r.signal}`);
  }
  return JSON.parse(r.stdout.trim().split("\n").pop());
}

// A process whose control (the reference, baseline or memcpy measured beside the codec in the same process)
// ran more than this much slower than the goal's fastest control was disturbed by load from outside: on this
// machine kind other tenants' bursts slow memory-bound loops by up to 2.5x for 0.1 s to tens of seconds. Its
// figures are left out and the process is run again, at most `processes` extra times per goal; the rows
// report how many were left out (see bench/RESULTS.md, "Stability").
const DISTURBED = 1.15;

/** The timed goals with a target: the ones stability covers, and the only ones re-run when disturbed. */
function isGatedTiming(g) {
  return g.kind === "ratio" || g.kind === "speedup" || g.kind === "c-limit";
}

/** Splits a goal's process results into undisturbed ones and those whose control ran slow. */
function splitDisturbed(rs) {
  const refs = rs.map((r) => r.refNs).filter((v) => Number.isFinite(v));
  if (refs.length === 0) return { kept: rs, disturbed: [] };
  const fastest = Math.min(...refs);
  const kept = rs.filter((r) => !(r.refNs > DISTURBED * fastest));
  return { kept, disturbed: rs.filter((r) => !kept.includes(r)) };
}

// Process p of every goal runs before process p + 1 of any: a burst of load from elsewhere then spoils one
// process of several goals (which the median over processes leaves out), not all processes of one goal.
function runAll(runtime) {
  const wanted = only?.split(",");
  const goals = GOALS.filter((g) =>
    g.kind !== "stability" && (wanted === undefined || wanted.includes(g.id))
  );
  const byGoal = new Map(goals.map((g) => [g.id, []]));
  let version = "";
  for (let p = 1; p <= processes; p++) {
    log(`bench: ${runtime} round ${p}/${processes} (${goals.length} processes) ...`);
    for (const g of goals) {
      const r = spawnWorker(runtime, g);
      version = r.version;
      for (const x of r.results) byGoal.get(x.id)?.push(x);
    }
  }
  // Re-run disturbed processes of gated timed goals, one extra process per goal and pass.
  for (let extra = 1; extra <= processes; extra++) {
    const short = goals.filter((g) =>
      isGatedTiming(g) && splitDisturbed(byGoal.get(g.id)).kept.length < processes
    );
    if (short.length === 0) break;
    log(`bench: ${runtime} re-run ${extra}/${processes} of disturbed processes: ${short.map((g) => g.id)}`);
    for (const g of short) {
      for (const x of spawnWorker(runtime, g).results) byGoal.get(x.id)?.push(x);
    }
  }
  return { runtime, version, byGoal };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function passes(goal, v) {
  if (goal.target === undefined || !Number.isFinite(v)) return goal.target === undefined ? null : false;
  return goal.kind === "speedup" ? v >= goal.target : v <= goal.target;
}

function aggregate(run) {
  const byId = new Map();
  for (const g of GOALS) {
    if (g.kind === "stability") continue;
    const all = run.byGoal.get(g.id) ?? [];
    if (all.length === 0) continue;
    const { kept, disturbed } = isGatedTiming(g) ? splitDisturbed(all) : { kept: all, disturbed: [] };
    const rs = kept;
    const ms = rs.map((r) => r.measured).filter((v) => Number.isFinite(v));
    const codec = rs.map((r) => r.codecNs).filter((v) => Number.isFinite(v));
    const codecMedians = rs.map((r) => r.codecMedianNs).filter((v) => Number.isFinite(v));
    const ref = rs.map((r) => r.refNs).filter((v) => Number.isFinite(v));
    const refBytes = rs.map((r) => r.refBytes).filter((v) => Number.isFinite(v));
    const errors = [...new Set(rs.map((r) => r.error).filter((e) => e !== undefined))];
    const measured = median(ms);
    byId.set(g.id, {
      measured,
      range: ms.length > 0 ? [Math.min(...ms), Math.max(...ms)] : [NaN, NaN],
      pass: errors.length > 0 ? false : passes(g, measured),
      codecNs: median(codec),
      refNs: median(ref),
      refBytes: median(refBytes),
      // Stability: slowest / fastest of the per-process figures of the codec side (each the lower quartile
      // of that process's batches); the same with the per-process medians, which a burst of load from other
      // processes moves more, is reported beside it.
      spread: codec.length > 1 ? Math.max(...codec) / Math.min(...codec) : NaN,
      medianSpread: codecMedians.length > 1 ? Math.max(...codecMedians) / Math.min(...codecMedians) : NaN,
      processes: ms.length,
      disturbed: disturbed.length,
      disturbedCodecNs: disturbed.map((r) => r.codecNs),
      disturbedRefNs: disturbed.map((r) => r.refNs),
      ...(errors.length > 0 ? { error: errors.join("; ") } : {}),
    });
  }
  const stability = GOALS.find((g) => g.kind === "stability");
  let worst = { spread: NaN, id: "" };
  let worstMedian = { spread: NaN, id: "" };
  // Stability covers the gated timings (ratio, speed-up, C limit), not the info rows.
  const gated = [...byId].filter(([id]) => {
    const kind = GOALS.find((g) => g.id === id)?.kind;
    return kind === "ratio" || kind === "speedup" || kind === "c-limit";
  });
  for (const [id, a] of gated) {
    if (Number.isFinite(a.spread) && !(a.spread <= worst.spread)) worst = { spread: a.spread, id };
    if (Number.isFinite(a.medianSpread) && !(a.medianSpread <= worstMedian.spread)) {
      worstMedian = { spread: a.medianSpread, id };
    }
  }
  const spreads = gated.map(([, a]) => a.spread).filter((v) => Number.isFinite(v));
  byId.set(stability.id, {
    measured: worst.spread,
    range: spreads.length > 0 ? [Math.min(...spreads), Math.max(...spreads)] : [NaN, NaN],
    pass: passes(stability, worst.spread),
    worst: worst.id,
    worstMedianSpread: worstMedian.spread,
    worstMedianId: worstMedian.id,
    processes,
    disturbed: gated.reduce((n, [, a]) => n + a.disturbed, 0),
  });
  return byId;
}

const results = {};
const versions = {};
const loadBefore = loadavg()[0];
for (const rt of runtimes) {
  const run = runAll(rt);
  versions[rt] = run.version;
  results[rt] = aggregate(run);
}

function unit(goal) {
  switch (goal.kind) {
    case "alloc":
      return " B";
    case "info":
      return goal.id.endsWith("-alloc") ? " B" : "x";
    default:
      return "x";
  }
}

function fmt(v) {
  if (!Number.isFinite(v)) return "n/a";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  if (Math.abs(v) >= 0.01 || v === 0) return v.toFixed(2);
  return v.toExponential(1);
}

function ns(v) {
  if (!Number.isFinite(v)) return "";
  return v >= 1e6
    ? `${(v / 1e6).toFixed(2)} ms`
    : v >= 1e3
    ? `${(v / 1e3).toFixed(1)} us`
    : `${v.toFixed(1)} ns`;
}

function cell(goal, a) {
  if (a === undefined) return "-";
  const u = unit(goal);
  const verdict = a.pass === null ? "" : a.pass ? " PASS" : " FAIL";
  if (!Number.isFinite(a.measured)) return `n/a${verdict}`;
  return `${fmt(a.measured)}${u} [${fmt(a.range[0])}-${fmt(a.range[1])}]${verdict}`;
}

function detail(a) {
  if (a === undefined) return "";
  if (a.error !== undefined) return `error: ${a.error}`;
  if (a.worst !== undefined) {
    const medians = `${fmt(a.worstMedianSpread)}x (${a.worstMedianId})`;
    return `worst: ${a.worst}; with per-process medians: ${medians}; disturbed processes left out: ${a.disturbed}`;
  }
  const parts = [];
  if (Number.isFinite(a.codecNs)) parts.push(`codec ${ns(a.codecNs)}`);
  if (Number.isFinite(a.refNs)) parts.push(`ref ${ns(a.refNs)}`);
  if (Number.isFinite(a.refBytes)) parts.push(`ref ${fmt(a.refBytes)} B`);
  if (Number.isFinite(a.spread)) parts.push(`spread ${a.spread.toFixed(2)}`);
  if (Number.isFinite(a.medianSpread)) parts.push(`median spread ${a.medianSpread.toFixed(2)}`);
  if (a.disturbed > 0) {
    const d = a.disturbedCodecNs.map((c, i) => `${ns(c)}/${ns(a.disturbedRefNs[i])}`).join(", ");
    parts.push(`left out (codec/control): ${d}`);
  }
  return parts.join(", ");
}

const loadAfter = loadavg()[0];
const gate = runtimes.includes("node") ? "node" : runtimes[0];
const others = runtimes.filter((r) => r !== gate);

const DETAIL_KEYS = [
  "codecNs",
  "refNs",
  "refBytes",
  "spread",
  "medianSpread",
  "worst",
  "worstMedianSpread",
  "worstMedianId",
  "disturbed",
  "error",
];

if (json) {
  for (const g of GOALS) {
    const a = results[gate].get(g.id);
    if (a === undefined) continue;
    const o = {
      id: g.id,
      measured: a.measured,
      target: g.target ?? null,
      pass: a.pass,
      kind: g.kind,
      title: g.title,
      runtime: `${gate} ${versions[gate]}`,
      range: a.range,
      processes: a.processes,
      loadAverage: [loadBefore, loadAfter],
    };
    for (const k of DETAIL_KEYS) if (Number.isFinite(a[k]) || typeof a[k] === "string") o[k] = a[k];
    if (a.disturbed > 0) o.leftOut = { codecNs: a.disturbedCodecNs, controlNs: a.disturbedRefNs };
    for (const rt of others) {
      const b = results[rt].get(g.id);
      if (b !== undefined) {
        o[rt] = { runtime: versions[rt], measured: b.measured, range: b.range, pass: b.pass };
        for (const k of DETAIL_KEYS) {
          if (Number.isFinite(b[k]) || typeof b[k] === "string") o[rt][k] = b[k];
        }
      }
    }
    process.stdout.write(JSON.stringify(o) + "\n");
  }
} else {
  const header = ["goal", "target", `${gate} ${versions[gate]} (gate)`, "detail"];
  for (const rt of others) header.push(`${rt} ${versions[rt]}`, `${rt} detail`);
  const rows = [header];
  for (const g of GOALS) {
    const a = results[gate].get(g.id);
    if (a === undefined) continue;
    const target = g.target === undefined
      ? "info"
      : `${g.kind === "speedup" ? ">=" : "<="} ${g.target}${unit(g)}`;
    const row = [g.id, target, cell(g, a), detail(a)];
    for (const rt of others) {
      const b = results[rt].get(g.id);
      row.push(cell(g, b), detail(b));
    }
    rows.push(row);
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r) => "| " + r.map((c, i) => c.padEnd(widths[i])).join(" | ") + " |";
  process.stdout.write(line(rows[0]) + "\n");
  process.stdout.write("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|\n");
  for (const r of rows.slice(1)) process.stdout.write(line(r) + "\n");
  process.stdout.write(
    `\n${processes} processes per runtime; value = median over processes [min-max]; ${gate} gates, ` +
      `the others are reported. Load average (1 min) before ${loadBefore.toFixed(2)}, after ` +
      `${loadAfter.toFixed(2)}. See bench/RESULTS.md for the method.\n`,
  );
}

/** Self time per function of every CPU profile written, top 15, so that a slow goal names its culprit. */
function summarizeProfiles() {
  for (const f of readdirSync(profDir).filter((x) => x.endsWith(".cpuprofile"))) {
    const p = JSON.parse(readFileSync(join(profDir, f), "utf8"));
    const nodes = new Map(p.nodes.map((n) => [n.id, n]));
    const self = new Map();
    let total = 0;
    for (let i = 0; i < p.samples.length; i++) {
      const n = nodes.get(p.samples[i]);
      const dt = p.timeDeltas[i] ?? 0;
      const cf = n.callFrame;
      const key = `${cf.functionName || "(anonymous)"} ${cf.url.split("/").pop()}:${cf.lineNumber + 1}`;
      self.set(key, (self.get(key) ?? 0) + dt);
      total += dt;
    }
    log(`\nbench: ${f} (self time, top 15)`);
    for (const [k, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
      log(`  ${((100 * t) / total).toFixed(1).padStart(5)}%  ${k}`);
    }
  }
  log(`bench: CPU profiles in ${profDir}`);
}

if (cpuProf) summarizeProfiles();
else rmSync(out, { recursive: true, force: true });
