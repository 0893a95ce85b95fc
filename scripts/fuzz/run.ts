// `npm run fuzz`: the fuzz campaign over every decoder. See docs/fuzzing.md.
//
//   npm run fuzz -- [--target NAME,...] [--time SECONDS | --total-time SECONDS] [--iterations N]
//                   [--seed N] [--workers 1|2] [--save DIR] [--report FILE] [--bundle-every N]
//
// Exit status: 0 nothing new found (known defects of issue 15 section 1 are reported, not failed on),
// 1 a new finding, 2 bad arguments.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { fromHex, hex } from "./check.ts";
import { type FuzzFinding, fuzzTarget, runOne, type TargetStats } from "./engine.ts";
import { KNOWN_DEFECTS_ISSUE_15_1 } from "./known.ts";
import { cliSettings, ROOT, type Target, TARGETS } from "./targets.ts";

interface Args {
  targets: Target[];
  timeMs: number | undefined;
  totalMs: number | undefined;
  iterations: number | undefined;
  seed: number;
  workers: number;
  save: string | undefined;
  report: string | undefined;
  bundleEvery: number;
  worker: boolean;
  replay: string[];
}

const USAGE = `Usage: npm run fuzz -- [options]
  --target NAME,...   targets (default: all): ${TARGETS.map((t) => t.name).join(", ")};
                      a name ending in * selects a prefix (frame:*)
  --time S            seconds per target
  --total-time S      wall-clock seconds in all, shared by the targets' weights (default 120)
  --iterations N      mutated inputs per target (stops at whichever limit comes first)
  --seed N            random seed (default 1)
  --workers N         processes, 1 or 2 (default 1)
  --save DIR          write each finding as a regression file (JSON) into DIR
  --report FILE       write the campaign's numbers as JSON
  --bundle-every N    the CLI target also runs every Nth input through dist/start.cjs (default 100, 0: never)
  --replay FILE       run a saved finding (a regression file) again and print what it shows (repeatable)
`;

function parse(argv: readonly string[]): Args {
  const a: Args = {
    targets: [...TARGETS],
    timeMs: undefined,
    totalMs: undefined,
    iterations: undefined,
    seed: 1,
    workers: 1,
    save: undefined,
    report: undefined,
    bundleEvery: 100,
    worker: false,
    replay: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    const num = () => {
      const x = Number(v());
      if (!Number.isFinite(x) || x < 0) throw new Error(`${k} needs a non-negative number`);
      return x;
    };
    switch (k) {
      case "--target": {
        const names = v().split(",");
        a.targets = TARGETS.filter((t) =>
          names.some((n) => n === t.name || (n.endsWith("*") && t.name.startsWith(n.slice(0, -1))))
        );
        const unknown = names.filter((n) =>
          !TARGETS.some((t) => n === t.name || (n.endsWith("*") && t.name.startsWith(n.slice(0, -1))))
        );
        if (unknown.length > 0) throw new Error(`unknown target ${unknown.join(", ")}`);
        break;
      }
      case "--time":
        a.timeMs = num() * 1000;
        break;
      case "--total-time":
        a.totalMs = num() * 1000;
        break;
      case "--iterations":
        a.iterations = num();
        break;
      case "--seed":
        a.seed = num();
        break;
      case "--workers":
        a.workers = num();
        if (a.workers < 1 || a.workers > 2) throw new Error("--workers is 1 or 2 (the machine has 2 cores)");
        break;
      case "--save":
        a.save = v();
        break;
      case "--report":
        a.report = v();
        break;
      case "--bundle-every":
        a.bundleEvery = num();
        break;
      case "--replay":
        a.replay.push(v());
        break;
      case "--worker":
        a.worker = true;
        break;
      case "-h":
      case "--help":
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${k}`);
    }
  }
  if (a.timeMs === undefined && a.totalMs === undefined && a.iterations === undefined) a.totalMs = 120_000;
  return a;
}

/** A finding as stored in a regression file (test/regressions/*.json). */
export interface FindingFile {
  target: string;
  check: string;
  known?: string;
  message: string;
  count: number;
  hex: string;
}

function toFile(f: FuzzFinding): FindingFile {
  return {
    target: f.target,
    check: f.check,
    ...(f.known ? { known: f.known.id } : {}),
    message: f.message.slice(0, 2000),
    count: f.count,
    hex: hex(f.input),
  };
}

/** Writes a finding as a regression file into `dir` (named by target, check and input). */
function save(dir: string, f: FindingFile): void {
  fs.mkdirSync(dir, { recursive: true });
  const name = `${f.target.replace(/[^a-z0-9]+/gi, "-")}-${f.check}-${hashName(f.hex).toString(36)}.json`;
  fs.writeFileSync(path.join(dir, name), JSON.stringify(f, null, 2) + "\n");
}

function budgetOf(a: Args, t: Target, targets: readonly Target[]): number | undefined {
  if (a.timeMs !== undefined) return a.timeMs;
  if (a.totalMs === undefined) return undefined;
  const sum = targets.reduce((s, x) => s + x.weight, 0);
  return (a.totalMs * t.weight) / sum;
}

async function runTargets(
  a: Args,
  targets: readonly Target[],
  all: readonly Target[],
  log: (s: string) => void,
) {
  const out: { stats: TargetStats; findings: FindingFile[] }[] = [];
  for (const t of targets) {
    const timeMs = budgetOf(a, t, all);
    log(
      `fuzz ${t.name}: ${timeMs === undefined ? "" : `${Math.round(timeMs / 1000)} s`}${
        a.iterations === undefined ? "" : ` ${a.iterations} inputs`
      }\n`,
    );
    const stats = await fuzzTarget(t, {
      seed: a.seed + hashName(t.name),
      ...(timeMs === undefined ? {} : { timeMs }),
      ...(a.iterations === undefined ? {} : { iterations: a.iterations }),
      onFinding: (f) => {
        log(
          `  ${f.known ? `known ${f.known.id}` : "NEW"} ${f.check}: ${
            f.message.split("\n")[0]
          } [${f.input.length} bytes]\n`,
        );
        if (a.save !== undefined) save(a.save, toFile(f));
      },
      onProgress: (s) => log(`  ${t.name}: ${s.inputs} inputs, corpus ${s.corpus}, ${s.features} features\n`),
    });
    log(
      `  ${t.name}: ${stats.inputs} inputs in ${(stats.ms / 1000).toFixed(1)} s (${
        Math.round(stats.inputs / (stats.ms / 1000))
      }/s), corpus ${stats.corpus}, ${stats.features} features, ${stats.findings.length} findings\n`,
    );
    out.push({ stats, findings: stats.findings.map(toFile) });
  }
  return out;
}

function hashName(s: string): number {
  let h = 0;
  for (const c of s) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h % 1_000_000;
}

function buildBundle(log: (s: string) => void): void {
  log("building dist/ (tsup) for the CLI target's bundle runs\n");
  const r = spawnSync("npx", ["tsup", "--silent"], { cwd: ROOT, stdio: "inherit" });
  if (r.status !== 0) throw new Error("tsup failed");
}

async function main(): Promise<number> {
  let a: Args;
  try {
    a = parse(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`fuzz: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  cliSettings.bundleEvery = a.bundleEvery;
  const log = (s: string) => void process.stderr.write(s);
  if (a.replay.length > 0) {
    let bad = 0;
    for (const f of a.replay) {
      const j = JSON.parse(fs.readFileSync(f, "utf8")) as FindingFile;
      const t = TARGETS.find((x) => x.name === j.target);
      if (t === undefined) throw new Error(`${f}: unknown target ${j.target}`);
      const v = await runOne(t, fromHex(j.hex), new Set());
      log(`${f}: ${v === undefined ? "passes" : `${v.check}: ${v.message}`}\n`);
      if (v !== undefined) bad++;
    }
    return bad > 0 ? 1 : 0;
  }
  if (a.worker) {
    const results = await runTargets(a, a.targets, a.targets, log);
    process.stdout.write(JSON.stringify(results));
    return 0;
  }
  if (a.bundleEvery > 0 && a.targets.some((t) => t.name === "cli")) buildBundle(log);
  // Targets shared between the workers by weight; this process is one of them.
  const shares: Target[][] = Array.from({ length: a.workers }, () => []);
  const load = new Array(a.workers).fill(0);
  for (const t of [...a.targets].sort((x, y) => y.weight - x.weight)) {
    const i = load.indexOf(Math.min(...load));
    shares[i]!.push(t);
    load[i] += t.weight;
  }
  const started = Date.now();
  const children = shares.slice(1).filter((s) => s.length > 0).map((share) => runChild(a, share));
  const mine = await runTargets(a, shares[0]!, shares[0]!, log);
  const results = [...mine, ...(await Promise.all(children)).flat()];

  const totalInputs = results.reduce((s, r) => s + r.stats.inputs, 0);
  const findings = results.flatMap((r) => r.findings);
  const fresh = findings.filter((f) => f.known === undefined);
  log(
    `\n== fuzz campaign: ${totalInputs} inputs in ${
      ((Date.now() - started) / 1000).toFixed(0)
    } s, seed ${a.seed}\n`,
  );
  for (const r of results) {
    log(
      `${r.stats.target.padEnd(26)} ${
        String(r.stats.inputs).padStart(10)
      } inputs  ${r.findings.length} findings\n`,
    );
  }
  for (const f of findings) {
    log(
      `${f.known ? `known ${f.known}` : "NEW"} ${f.target} ${f.check} (x${f.count}): ${
        f.message.split("\n")[0]
      }\n  input ${f.hex.slice(0, 160)}${f.hex.length > 160 ? "..." : ""}\n`,
    );
  }
  const knownIds = [...new Set(findings.flatMap((f) => f.known ? [f.known] : []))].sort();
  log(
    `known defects of issue 15 section 1 seen: ${
      knownIds.join(", ") || "none"
    } (of ${KNOWN_DEFECTS_ISSUE_15_1.length} listed)\n`,
  );
  log(`new findings: ${fresh.length}\n`);
  // Saved again at the end, with their final counts.
  if (a.save !== undefined) { for (const f of findings) save(a.save, f); }
  if (a.report !== undefined) {
    fs.writeFileSync(
      a.report,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          seed: a.seed,
          workers: a.workers,
          seconds: Math.round((Date.now() - started) / 1000),
          totalInputs,
          targets: results.map((r) => ({
            target: r.stats.target,
            inputs: r.stats.inputs,
            seconds: Math.round(r.stats.ms / 1000),
            corpus: r.stats.corpus,
            features: r.stats.features,
            findings: r.findings.map((f) => ({
              check: f.check,
              known: f.known,
              count: f.count,
              message: f.message.split("\n")[0],
            })),
          })),
        },
        null,
        2,
      ) + "\n",
    );
  }
  return fresh.length > 0 ? 1 : 0;
}

function runChild(
  a: Args,
  share: readonly Target[],
): Promise<{ stats: TargetStats; findings: FindingFile[] }[]> {
  const script = new URL(import.meta.url).pathname;
  const deno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
  const timeArgs = a.timeMs !== undefined
    ? ["--time", String(a.timeMs / 1000)]
    : a.totalMs !== undefined
    ? ["--total-time", String(a.totalMs / 1000)]
    : [];
  const args = [
    ...(deno ? ["run", "-A", "--v8-flags=--expose-gc,--max-old-space-size=3072"] : ["--expose-gc"]),
    script,
    "--worker",
    "--target",
    share.map((t) => t.name).join(","),
    "--seed",
    String(a.seed),
    "--bundle-every",
    String(a.bundleEvery),
    ...timeArgs,
    ...(a.iterations === undefined ? [] : ["--iterations", String(a.iterations)]),
    ...(a.save === undefined ? [] : ["--save", a.save]),
  ];
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    c.stdout.setEncoding("utf8");
    c.stdout.on("data", (d: string) => void (out += d));
    c.on("error", reject);
    c.on("close", (code) => {
      if (code !== 0) reject(new Error(`fuzz worker exited ${code}`));
      else resolve(JSON.parse(out));
    });
  });
}

process.exitCode = await main();
