/**
 * Dissect benchmark: `nbd-codec dissect` (the built npm bin, `node dist/start.cjs`, text and `--json`; under
 * Deno beside) against `tshark -r CAPTURE --enable-heuristic nbd_tcp -V -O nbd`, side by side on the same
 * files in the same run. Each round runs the commands one after the other on one capture, 5 rounds per
 * capture (`--runs`);
 * a speed-up is the median over the rounds of tshark's wall time over ours in that round (so that load that
 * comes and goes on the machine hits both sides alike), with the range over the rounds. Throughput is MB of
 * capture per second of wall time (process start included; timed here with performance.now() around the
 * spawn, as /usr/bin/time counts only hundredths), CPU time is user + system; peak RSS is
 * `/usr/bin/time -v`'s "Maximum resident set size". Output of both tools goes to /dev/null.
 *
 * Goals (bench/RESULTS.md, "Dissect"): at least 5x tshark's throughput (`dissect-speedup-CAPTURE`, text
 * output with packet numbers and times, one goal per capture), under 200 MB peak RSS on the generated 1 GB
 * capture (`dissect-peak-rss-1g`), and `nbd-codec stats` on each 1 GB capture at least as fast as `dissect
 * --json` (`stats-vs-json-CAPTURE`, the ratio of their wall times in the same round) in under 200 MB
 * (`stats-peak-rss-CAPTURE`), with `tshark -q -z conv,tcp` reported beside.
 *
 * Usage: npm run bench:dissect (builds first) [-- --json] [-- --runs N] [-- --only a,b] [-- --write]
 * or deno run -A bench/dissect/run.ts [same options]. `--json` prints one JSON object per goal (`id`,
 * `measured`, `target`, `pass`, and details) on standard output, the table going to standard error;
 * `--write` also replaces the results
 * section of docs/dissect.md. Captures are generated into /tmp/nbd-codec-bench/ (about 2.4 GB; never
 * committed) and reused by later runs.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { generate, generateMixed } from "./generate.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const CLI = path.join(ROOT, "dist", "start.cjs");
const DIR = path.join(os.tmpdir(), "nbd-codec-bench");
const DOC = path.join(ROOT, "docs", "dissect.md");
const START = "<!-- bench:dissect:start -->";
const END = "<!-- bench:dissect:end -->";
const SPEEDUP_TARGET = 5;
const RSS_TARGET_MB = 200;

interface CaptureSpec {
  readonly name: string;
  /** The file: bundled ones are in vectors/captures/, generated ones in {@link DIR}. */
  readonly file: string;
  /** Writes the file when it is missing (generated captures only). */
  readonly make?: (file: string) => void;
  readonly what: string;
}

const CAPTURES: readonly CaptureSpec[] = [
  {
    name: "qemu10-ext-io",
    file: path.join(ROOT, "vectors", "captures", "qemu10-ext-io.pcap"),
    what: "the bundled sample capture (qemu-io and qemu-nbd 10, extended headers, every I/O command): " +
      "137 KB, 30 frames; process start dominates both tools",
  },
  {
    name: "mixed-100m",
    file: path.join(DIR, "mixed-100m.pcap"),
    make: (f) => generateMixed(f, 100e6, 3),
    what: "100 MB like real traffic: 3 connections over Ethernet (1448-byte segments), each negotiating " +
      "structured replies and base:allocation, then interleaved READ (OFFSET_DATA chunk), WRITE, " +
      "BLOCK_STATUS (4 extents) and FLUSH of 4 KiB to 1 MiB: 543 commands (237 READ, 214 WRITE, 57 BLOCK_STATUS, 35 FLUSH), 66 853 packets",
  },
  {
    name: "loopback-100m",
    file: path.join(DIR, "loopback-100m.pcap"),
    make: (f) => generate(f, 100e6, 65483, 65536),
    what: "100 MB, 64 KiB WRITEs, 65483-byte segments (loopback): 1 520 WRITEs, 4 569 packets",
  },
  {
    name: "ethernet-100m",
    file: path.join(DIR, "ethernet-100m.pcap"),
    make: (f) => generate(f, 100e6, 1448, 65536),
    what: "100 MB, 64 KiB WRITEs, 1448-byte segments (Ethernet): 1 453 WRITEs, 68 300 packets",
  },
  {
    name: "small-100m",
    file: path.join(DIR, "small-100m.pcap"),
    make: (f) => generate(f, 100e6, 65483, 4096),
    what: "100 MB, 4 KiB WRITEs (one packet each) and their replies: 23 365 WRITEs, 46 739 packets",
  },
  {
    name: "small-1g",
    file: path.join(DIR, "small-1g.pcap"),
    make: (f) => generate(f, 1024e6, 65483, 4096),
    what: "1024 MB, 4 KiB WRITEs (one packet each) and their replies: 239 253 WRITEs, 478 515 packets; " +
      "small-100m ten times over, so that start-up and warm-up weigh a tenth as much",
  },
  {
    name: "loopback-1g",
    file: path.join(DIR, "loopback-1g.pcap"),
    make: (f) => generate(f, 1024e6, 65483, 65536),
    what: "1024 MB, 64 KiB WRITEs, 65483-byte segments (loopback): 15 565 WRITEs, 46 704 packets; " +
      "the peak-RSS capture",
  },
];

/**
 * Environment variables removed from every measured command. This machine kind sets NODE_EXTRA_CA_CERTS to
 * the system's CA bundle (for its network proxy); Node 20 then parses 150 KB of certificates before running
 * any script, which took `node -e 0` from 22 ms to 60 ms here. dissect makes no TLS connection and tshark
 * reads no such variable, so it is taken out; the "(environment as given)" row shows what it costs.
 */
const REMOVED_ENV = ["NODE_EXTRA_CA_CERTS"] as const;
const INHERITED = REMOVED_ENV.some((k) => process.env[k] !== undefined);

const OURS = "nbd-codec dissect";
const OURS_JSON = "nbd-codec dissect --json";
const OURS_DENO = "nbd-codec dissect (Deno)";
const OURS_INHERITED = "nbd-codec dissect (environment as given)";
const OURS_STATS = "nbd-codec stats";
const TSHARK_CONV = "tshark -q -z conv,tcp";
const TSHARK = "tshark -V -O nbd";
/**
 * The commands measured in each round, in order: the gated one first, tshark last. `stats` (gated against
 * `dissect --json` on the 1 GB captures) and tshark's TCP conversation table, the nearest thing tshark has
 * to it, are measured beside.
 */
const TOOLS: readonly string[] = [
  OURS,
  OURS_JSON,
  OURS_DENO,
  ...(INHERITED ? [OURS_INHERITED] : []),
  OURS_STATS,
  TSHARK_CONV,
  TSHARK,
];
type Tool = string;

function argv(tool: Tool, file: string): string[] {
  const node = process.env.NODE ?? "node";
  switch (tool) {
    case OURS:
    case OURS_INHERITED:
      return [node, CLI, "dissect", file];
    case OURS_JSON:
      return [node, CLI, "dissect", file, "--json"];
    case OURS_STATS:
      return [node, CLI, "stats", file];
    case TSHARK_CONV:
      return ["tshark", "-r", file, "-q", "-z", "conv,tcp"];
    case OURS_DENO:
      return [
        process.env.DENO ?? "deno",
        "run",
        "-A",
        path.join(ROOT, "bin", "nbd-codec.ts"),
        "dissect",
        file,
      ];
    case TSHARK:
      return ["tshark", "-r", file, "--enable-heuristic", "nbd_tcp", "-V", "-O", "nbd"];
  }
  throw new Error(`unknown tool ${tool}`);
}

/**
 * The command line that runs `args` in the environment of `tool`: through env(1), with {@link REMOVED_ENV}
 * unset unless the row is "as given". (Deno's `node:child_process` adds the parent's environment to an `env`
 * option instead of replacing it, so the variables are removed by env(1); every command goes through it,
 * so that each pays the same extra exec.)
 */
function withEnvironment(tool: Tool, args: readonly string[]): string[] {
  const unset = tool === OURS_INHERITED ? [] : REMOVED_ENV.flatMap((k) => ["-u", k]);
  return ["env", ...unset, ...args];
}

interface Sample {
  /** Wall time. */
  readonly seconds: number;
  /** User plus system CPU time: less sensitive than wall time to other load on the machine. */
  readonly cpuSeconds: number;
  readonly rssKb: number;
}

function timed(args: readonly string[]): Sample {
  const stats = path.join(DIR, "time.txt");
  const start = performance.now();
  const r = spawnSync("/usr/bin/time", ["-v", "-o", stats, ...args], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  const seconds = (performance.now() - start) / 1000;
  if (r.status !== 0) throw new Error(`${args.join(" ")} exited with ${r.status}`);
  const text = fs.readFileSync(stats, "utf8");
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(text);
  const user = /User time \(seconds\): ([\d.]+)/.exec(text);
  const sys = /System time \(seconds\): ([\d.]+)/.exec(text);
  if (rss === null || user === null || sys === null) {
    throw new Error(`cannot parse /usr/bin/time output:\n${text}`);
  }
  return { seconds, cpuSeconds: Number(user[1]) + Number(sys[1]), rssKb: Number(rss[1]) };
}

/** Median, minimum, maximum. */
type Stat = readonly [number, number, number];

function stat(xs: readonly number[]): Stat {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  const median = s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
  return [median, s[0]!, s[s.length - 1]!];
}

interface Row {
  readonly capture: string;
  readonly megabytes: number;
  readonly tool: Tool;
  readonly mbps: Stat;
  readonly cpuMbps: Stat;
  readonly rssMb: Stat;
  /** tshark's time over ours, per round (wall and CPU); 1 for tshark itself. */
  readonly speedup: Stat;
  readonly cpuSpeedup: Stat;
  /** `dissect --json`'s wall time over this tool's, per round. */
  readonly vsJson: Stat;
}

/** Median (min–max) with `digits` decimals, or more for small values (a tiny capture's MB/s). */
function fmt(v: Stat, digits: number): string {
  const d = v[0] < 10 ? Math.max(digits, 2) : digits;
  return `${v[0].toFixed(d)} (${v[1].toFixed(d)}–${v[2].toFixed(d)})`;
}

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return (r.stdout ?? "").split("\n")[0]?.trim() ?? "";
}

function measure(c: CaptureSpec, runs: number): Row[] {
  if (!fs.existsSync(c.file)) {
    if (c.make === undefined) throw new Error(`${c.file} is missing`);
    process.stderr.write(`generating ${c.file}\n`);
    c.make(c.file);
  }
  const megabytes = fs.statSync(c.file).size / 1e6;
  const samples = new Map<Tool, Sample[]>(TOOLS.map((t) => [t, []]));
  // Warm the page cache (and the tools' own files) once, unmeasured.
  for (const t of TOOLS) timed(withEnvironment(t, argv(t, c.file)));
  for (let i = 0; i < runs; i++) {
    for (const t of TOOLS) samples.get(t)!.push(timed(withEnvironment(t, argv(t, c.file))));
  }
  const ref = samples.get(TSHARK)!;
  return TOOLS.map((tool) => {
    const s = samples.get(tool)!;
    const row: Row = {
      capture: c.name,
      megabytes,
      tool,
      mbps: stat(s.map((x) => megabytes / x.seconds)),
      cpuMbps: stat(s.map((x) => megabytes / Math.max(x.cpuSeconds, 0.001))),
      rssMb: stat(s.map((x) => x.rssKb / 1024)),
      speedup: stat(s.map((x, i) => ref[i]!.seconds / x.seconds)),
      cpuSpeedup: stat(s.map((x, i) => ref[i]!.cpuSeconds / Math.max(x.cpuSeconds, 0.001))),
      vsJson: stat(s.map((x, i) => samples.get(OURS_JSON)![i]!.seconds / x.seconds)),
    };
    process.stderr.write(
      `${c.name} ${tool}: ${fmt(row.mbps, 0)} MB/s wall, ${fmt(row.cpuMbps, 0)} MB/s CPU, ${
        fmt(row.rssMb, 0)
      } MB, ${fmt(row.speedup, 1)}x\n`,
    );
    return row;
  });
}

interface Goal {
  readonly id: string;
  readonly title: string;
  readonly measured: number;
  readonly range: readonly [number, number];
  readonly target: number;
  readonly unit: "x" | "MB";
  readonly pass: boolean;
  readonly detail: Record<string, unknown>;
}

/** A statistic rounded for JSON. */
function r3(v: Stat): number[] {
  return v.map((x) => Number(x.toFixed(3)));
}

function goals(rows: readonly Row[]): Goal[] {
  const out: Goal[] = [];
  for (const c of CAPTURES) {
    const ours = rows.find((r) => r.capture === c.name && r.tool === OURS);
    const json = rows.find((r) => r.capture === c.name && r.tool === OURS_JSON);
    const deno = rows.find((r) => r.capture === c.name && r.tool === OURS_DENO);
    const inherited = rows.find((r) => r.capture === c.name && r.tool === OURS_INHERITED);
    const tshark = rows.find((r) => r.capture === c.name && r.tool === TSHARK);
    if (ours === undefined || json === undefined || tshark === undefined) continue;
    out.push({
      id: `dissect-speedup-${c.name}`,
      title: `nbd-codec dissect vs tshark -V -O nbd on ${c.name}.pcap: throughput ratio (wall time)`,
      measured: ours.speedup[0],
      range: [ours.speedup[1], ours.speedup[2]],
      target: SPEEDUP_TARGET,
      unit: "x",
      pass: ours.speedup[0] >= SPEEDUP_TARGET,
      detail: {
        megabytes: Number(ours.megabytes.toFixed(3)),
        oursMBps: r3(ours.mbps),
        tsharkMBps: r3(tshark.mbps),
        cpuSpeedup: r3(ours.cpuSpeedup),
        jsonSpeedup: r3(json.speedup),
        ...(deno === undefined ? {} : { denoSpeedup: r3(deno.speedup) }),
        ...(inherited === undefined ? {} : { environmentAsGivenSpeedup: r3(inherited.speedup) }),
        oursRssMB: r3(ours.rssMb),
        tsharkRssMB: r3(tshark.rssMb),
      },
    });
    const stats = rows.find((r) => r.capture === c.name && r.tool === OURS_STATS);
    const conv = rows.find((r) => r.capture === c.name && r.tool === TSHARK_CONV);
    if (stats !== undefined && c.name.endsWith("-1g")) {
      out.push({
        id: `stats-vs-json-${c.name}`,
        title:
          `nbd-codec stats vs nbd-codec dissect --json on ${c.name}.pcap: wall time ratio (json over stats)`,
        measured: stats.vsJson[0],
        range: [stats.vsJson[1], stats.vsJson[2]],
        target: 1,
        unit: "x",
        pass: stats.vsJson[0] >= 1,
        detail: {
          statsMBps: r3(stats.mbps),
          jsonMBps: r3(json.mbps),
          ...(conv === undefined ? {} : { tsharkConvMBps: r3(conv.mbps), tsharkConvRssMB: r3(conv.rssMb) }),
          statsRssMB: r3(stats.rssMb),
        },
      });
      out.push({
        id: `stats-peak-rss-${c.name}`,
        title: `nbd-codec stats peak RSS on ${c.name}.pcap`,
        measured: stats.rssMb[0],
        range: [stats.rssMb[1], stats.rssMb[2]],
        target: RSS_TARGET_MB,
        unit: "MB",
        pass: stats.rssMb[0] < RSS_TARGET_MB,
        detail: {
          statsRssMB: r3(stats.rssMb),
          ...(conv === undefined ? {} : { tsharkConvRssMB: r3(conv.rssMb) }),
        },
      });
    }
    if (c.name === "loopback-1g") {
      const worst = Math.max(ours.rssMb[0], json.rssMb[0]);
      out.push({
        id: "dissect-peak-rss-1g",
        title: "nbd-codec dissect peak RSS on the generated 1 GB capture (text and --json, the larger)",
        measured: worst,
        range: [Math.min(ours.rssMb[1], json.rssMb[1]), Math.max(ours.rssMb[2], json.rssMb[2])],
        target: RSS_TARGET_MB,
        unit: "MB",
        pass: worst < RSS_TARGET_MB,
        detail: { textRssMB: r3(ours.rssMb), jsonRssMB: r3(json.rssMb), tsharkRssMB: r3(tshark.rssMb) },
      });
    }
  }
  return out;
}

function table(rows: readonly Row[], gs: readonly Goal[], runs: number, load: readonly number[]): string {
  const cpu = /model name\s*: (.*)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? os.arch();
  const lines = [
    `Measured ${
      new Date().toISOString().slice(0, 16).replace("T", " ")
    } UTC on ${cpu} (${os.cpus().length} CPUs), Node ${
      firstLine(process.env.NODE ?? "node", ["--version"])
    }, ${firstLine(process.env.DENO ?? "deno", ["--version"])}, ${
      firstLine("tshark", ["--version"]).replace(/\.$/, "")
    }. ${runs} rounds per capture, each running the ${TOOLS.length} commands one after the other; median (range) ` +
    "over the rounds. MB/s of capture per second of wall time (process start included) and per second of " +
    "CPU time (user + system, all threads). Speed-up: tshark's time over ours in the same round (wall time, " +
    `then CPU time), median (range) over the rounds. Load average (1 min) ${load[0]!.toFixed(1)} before, ${
      load[1]!.toFixed(1)
    } after, on ${os.cpus().length} CPUs: other work ran on the machine. Output to /dev/null. The gated ` +
    `row is the npm bin under Node (\`node dist/start.cjs dissect\`, its compile cache written by the ` +
    `unmeasured first run); Deno (\`deno run -A bin/nbd-codec.ts dissect\`) is reported beside. ` +
    `${REMOVED_ENV.join(", ")} removed from the measured commands' environment` +
    (INHERITED ? ' except in the "(environment as given)" row' : "") + ".",
    "",
    "| capture | tool | MB/s (wall) | MB/s (CPU) | peak RSS (MB) | speed-up vs tshark -V (wall) | speed-up (CPU) | vs dissect --json (wall) |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    const isRef = r.tool === TSHARK;
    lines.push(
      `| ${r.capture} | ${r.tool} | ${fmt(r.mbps, 0)} | ${fmt(r.cpuMbps, 0)} | ${fmt(r.rssMb, 0)} | ${
        isRef ? "1.0x" : fmt(r.speedup, 1) + "x"
      } | ${isRef ? "1.0x" : fmt(r.cpuSpeedup, 1) + "x"} | ${fmt(r.vsJson, 2)}x |`,
    );
  }
  lines.push("", "| goal | target | measured (range) | result |", "| --- | ---: | ---: | --- |");
  for (const g of gs) {
    const digits = g.unit === "x" ? 1 : 0;
    lines.push(
      `| ${g.id} | ${g.unit === "x" ? ">=" : "<"} ${g.target}${g.unit === "x" ? "x" : " MB"} | ${
        g.measured.toFixed(digits)
      }${g.unit === "x" ? "x" : " MB"} (${g.range[0].toFixed(digits)}–${g.range[1].toFixed(digits)}) | ${
        g.pass ? "PASS" : "FAIL"
      } |`,
    );
  }
  lines.push("", "Captures:", "");
  for (const c of CAPTURES) {
    if (rows.some((r) => r.capture === c.name)) lines.push(`- \`${c.name}.pcap\`: ${c.what}.`);
  }
  return lines.join("\n");
}

function main(): void {
  const args = process.argv.slice(2);
  const runsAt = args.indexOf("--runs");
  const runs = runsAt >= 0 ? Number(args[runsAt + 1]) : 5;
  const onlyAt = args.indexOf("--only");
  const only = onlyAt >= 0 ? args[onlyAt + 1]!.split(",") : undefined;
  const write = args.includes("--write");
  const json = args.includes("--json");
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs ${runs} is not a positive integer`);
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run tsup (npm run build) first`);
  fs.mkdirSync(DIR, { recursive: true });

  const before = os.loadavg()[0]!;
  const rows: Row[] = [];
  for (const c of CAPTURES) {
    if (only === undefined || only.includes(c.name)) rows.push(...measure(c, runs));
  }
  const load = [before, os.loadavg()[0]!];
  const gs = goals(rows);
  if (json) {
    for (const g of gs) {
      process.stdout.write(
        JSON.stringify({
          id: g.id,
          measured: Number(g.measured.toFixed(3)),
          target: g.target,
          pass: g.pass,
          unit: g.unit,
          title: g.title,
          range: g.range.map((v) => Number(v.toFixed(3))),
          runs,
          loadAverage: load.map((v) => Number(v.toFixed(2))),
          ...g.detail,
        }) + "\n",
      );
    }
  }
  const text = table(rows, gs, runs, load);
  // With --json the table still goes to standard error, for the log.
  if (json) process.stderr.write(text + "\n");
  else process.stdout.write(text + "\n");
  if (write) {
    const doc = fs.readFileSync(DOC, "utf8");
    const a = doc.indexOf(START);
    const b = doc.indexOf(END);
    if (a < 0 || b < a) throw new Error(`${DOC} has no ${START} ... ${END} section`);
    fs.writeFileSync(DOC, doc.slice(0, a + START.length) + "\n" + text + "\n" + doc.slice(b));
    process.stderr.write(`wrote ${DOC}\n`);
  }
}

main();
