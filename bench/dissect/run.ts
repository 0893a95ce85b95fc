/**
 * Dissect benchmark: `nbd-codec dissect` (the built npm bin, `node dist/nbd-codec.js`) against
 * `tshark -r CAPTURE --enable-heuristic nbd_tcp -V -O nbd` on the same generated captures, in the same
 * run. Reports throughput (MB of capture per second of wall time, process start included) and peak RSS
 * (`/usr/bin/time -v` "Maximum resident set size"), median of 5 runs with the range. Output of both tools
 * goes to /dev/null.
 *
 * Usage: npm run bench:dissect (builds first), or deno run -A bench/dissect/run.ts [--runs N] [--write]
 * `--write` also replaces the results section of docs/dissect.md. Captures are generated into
 * /tmp/nbd-codec-bench/ (about 1.2 GB; never committed) and reused by later runs.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { generate } from "./generate.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const CLI = path.join(ROOT, "dist", "nbd-codec.js");
const DIR = path.join(os.tmpdir(), "nbd-codec-bench");
const DOC = path.join(ROOT, "docs", "dissect.md");
const START = "<!-- bench:dissect:start -->";
const END = "<!-- bench:dissect:end -->";

interface CaptureSpec {
  readonly name: string;
  readonly megabytes: number;
  readonly mss: number;
  readonly writeSize: number;
  readonly what: string;
}

const CAPTURES: readonly CaptureSpec[] = [
  {
    name: "loopback-100m",
    megabytes: 100,
    mss: 65483,
    writeSize: 65536,
    what: "100 MB, 64 KiB WRITEs, 65483-byte segments (loopback): 1 520 WRITEs, 4 569 packets",
  },
  {
    name: "ethernet-100m",
    megabytes: 100,
    mss: 1448,
    writeSize: 65536,
    what: "100 MB, 64 KiB WRITEs, 1448-byte segments (Ethernet): 1 453 WRITEs, 68 300 packets",
  },
  {
    name: "small-100m",
    megabytes: 100,
    mss: 65483,
    writeSize: 4096,
    what: "100 MB, 4 KiB WRITEs (one packet each) and their replies: 23 365 WRITEs, 46 739 packets",
  },
  {
    name: "loopback-1g",
    megabytes: 1024,
    mss: 65483,
    writeSize: 65536,
    what: "1024 MB, 64 KiB WRITEs, 65483-byte segments (loopback): 15 565 WRITEs, 46 704 packets",
  },
];

interface Sample {
  /** Wall time. */
  readonly seconds: number;
  /** User plus system CPU time: less sensitive than wall time to other load on the machine. */
  readonly cpuSeconds: number;
  readonly rssKb: number;
}

function timed(argv: readonly string[]): Sample {
  const stats = path.join(DIR, "time.txt");
  const r = spawnSync("/usr/bin/time", ["-v", "-o", stats, ...argv], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited with ${r.status}`);
  const text = fs.readFileSync(stats, "utf8");
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)/.exec(text);
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(text);
  const user = /User time \(seconds\): ([\d.]+)/.exec(text);
  const sys = /System time \(seconds\): ([\d.]+)/.exec(text);
  if (wall === null || rss === null || user === null || sys === null) {
    throw new Error(`cannot parse /usr/bin/time output:\n${text}`);
  }
  const seconds = Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3]);
  return { seconds, cpuSeconds: Number(user[1]) + Number(sys[1]), rssKb: Number(rss[1]) };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface Row {
  readonly capture: string;
  readonly tool: string;
  readonly mbps: readonly [number, number, number];
  readonly cpuMbps: readonly [number, number, number];
  readonly rssMb: readonly [number, number, number];
  readonly seconds: number;
}

function summarize(capture: string, tool: string, megabytes: number, samples: readonly Sample[]): Row {
  const mbps = samples.map((s) => megabytes / s.seconds);
  const cpu = samples.map((s) => megabytes / Math.max(s.cpuSeconds, 0.001));
  const rss = samples.map((s) => s.rssKb / 1024);
  return {
    capture,
    tool,
    mbps: [median(mbps), Math.min(...mbps), Math.max(...mbps)],
    cpuMbps: [median(cpu), Math.min(...cpu), Math.max(...cpu)],
    rssMb: [median(rss), Math.min(...rss), Math.max(...rss)],
    seconds: median(samples.map((s) => s.seconds)),
  };
}

function fmt(v: readonly [number, number, number], digits: number): string {
  return `${v[0].toFixed(digits)} (${v[1].toFixed(digits)}–${v[2].toFixed(digits)})`;
}

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return (r.stdout ?? "").split("\n")[0]?.trim() ?? "";
}

function main(): void {
  const args = process.argv.slice(2);
  const runsAt = args.indexOf("--runs");
  const runs = runsAt >= 0 ? Number(args[runsAt + 1]) : 5;
  const write = args.includes("--write");
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run tsup (npm run build) first`);
  fs.mkdirSync(DIR, { recursive: true });

  const rows: Row[] = [];
  for (const c of CAPTURES) {
    const file = path.join(DIR, `${c.name}.pcap`);
    if (!fs.existsSync(file)) {
      process.stderr.write(`generating ${file}\n`);
      generate(file, c.megabytes * 1e6, c.mss, c.writeSize);
    }
    const megabytes = fs.statSync(file).size / 1e6;
    const tools: [string, string[]][] = [
      ["nbd-codec dissect (node)", [process.env.NODE ?? "node", CLI, "dissect", file]],
      ["nbd-codec dissect --json (node)", [process.env.NODE ?? "node", CLI, "dissect", file, "--json"]],
      ["tshark -V -O nbd", ["tshark", "-r", file, "--enable-heuristic", "nbd_tcp", "-V", "-O", "nbd"]],
    ];
    for (const [tool, argv] of tools) {
      const samples: Sample[] = [];
      for (let i = 0; i < runs; i++) samples.push(timed(argv));
      const row = summarize(`${c.name}.pcap`, tool, megabytes, samples);
      rows.push(row);
      process.stderr.write(
        `${row.capture} ${tool}: ${fmt(row.mbps, 0)} MB/s wall, ${fmt(row.cpuMbps, 0)} MB/s CPU, ${
          fmt(row.rssMb, 0)
        } MB\n`,
      );
    }
  }

  const cpu = /model name\s*: (.*)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? os.arch();
  const lines = [
    `Measured ${new Date().toISOString().slice(0, 10)} on ${cpu} (${os.cpus().length} CPUs), Node ${
      firstLine(process.env.NODE ?? "node", ["--version"])
    }, ${
      firstLine("tshark", ["--version"]).replace(/\.$/, "")
    }. Median of ${runs} runs (range in parentheses). MB/s of capture per second of wall time (process start ` +
    "included) and per second of CPU time (user + system, all threads); speed-ups are ratios of the medians. " +
    `Load average at the start: ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} CPUs (other work ran ` +
    "on the machine: trust the CPU-time column more). Output to /dev/null.",
    "",
    "| capture | tool | MB/s (wall) | MB/s (CPU) | peak RSS (MB) | speed-up vs tshark (wall / CPU) |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    const tshark = rows.find((t) => t.capture === r.capture && t.tool.startsWith("tshark"))!;
    const speedup = r === tshark
      ? "1.0x / 1.0x"
      : `${(r.mbps[0] / tshark.mbps[0]).toFixed(1)}x / ${(r.cpuMbps[0] / tshark.cpuMbps[0]).toFixed(1)}x`;
    lines.push(
      `| ${r.capture} | ${r.tool} | ${fmt(r.mbps, 0)} | ${fmt(r.cpuMbps, 0)} | ${
        fmt(r.rssMb, 0)
      } | ${speedup} |`,
    );
  }
  lines.push("", "Captures (generated by `bench/dissect/generate.ts`):", "");
  for (const c of CAPTURES) lines.push(`- \`${c.name}.pcap\`: ${c.what}.`);
  const table = lines.join("\n");
  process.stdout.write(table + "\n");
  if (write) {
    const doc = fs.readFileSync(DOC, "utf8");
    const a = doc.indexOf(START);
    const b = doc.indexOf(END);
    if (a < 0 || b < a) throw new Error(`${DOC} has no ${START} ... ${END} section`);
    fs.writeFileSync(DOC, doc.slice(0, a + START.length) + "\n" + table + "\n" + doc.slice(b));
    process.stderr.write(`wrote ${DOC}\n`);
  }
}

main();
