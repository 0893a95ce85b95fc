/**
 * The client side of the conformance matrix: `conform client` under every profile, with qemu-img, qemu-io,
 * nbdinfo, nbdcopy and a python `nbd` script as the client.
 *
 *   npx vite-node scripts/conform-clients.ts -- --print
 *   npx vite-node scripts/conform-clients.ts -- --write docs/conformance.md
 *   npx vite-node scripts/conform-clients.ts -- --check docs/conformance.md
 *
 * A cell is `pass` when every client case passed, else the ids of the cases that did not (and why, in the
 * text of docs/conformance.md). `-` marks a profile that does not apply to a client (the errors profile
 * only to clients that read the data).
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import type { ConformResult } from "../codec/conform.ts";
import { CLIENT_PROFILES } from "../codec/conform_client.ts";
import { runConformClient } from "../bin/conform_client.ts";
import { blockOf } from "./conform-docs.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
process.env.PATH = `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ""}`;

interface Client {
  readonly id: string;
  readonly label: string;
  /** The command; OUT is replaced by the output file when the client writes the data out. */
  readonly command: readonly string[];
  readonly output: boolean;
}

const CLIENTS: readonly Client[] = [
  {
    id: "qemu-img",
    label: "qemu-img convert",
    command: ["qemu-img", "convert", "-f", "raw", "-O", "raw", "{uri}", "OUT"],
    output: true,
  },
  {
    id: "qemu-io",
    label: "qemu-io write/read",
    command: [
      "qemu-io",
      "-f",
      "raw",
      "-c",
      "write -P 0x55 0 64k",
      "-c",
      "read -P 0x55 0 64k",
      "-c",
      "write -z 64k 64k",
      "-c",
      "flush",
      "{uri}",
    ],
    output: false,
  },
  { id: "nbdinfo-map", label: "nbdinfo --map", command: ["nbdinfo", "--map", "{uri}"], output: false },
  { id: "nbdinfo-list", label: "nbdinfo --list", command: ["nbdinfo", "--list", "{uri}"], output: false },
  { id: "nbdcopy", label: "nbdcopy", command: ["nbdcopy", "{uri}", "OUT"], output: true },
  {
    id: "python-nbd",
    label: "python3 nbd",
    command: ["/usr/bin/python3", path.join(ROOT, "scripts", "conform_client.py"), "{uri}", "OUT"],
    output: true,
  },
];

const PROFILES = Object.keys(CLIENT_PROFILES);

async function cell(client: Client, profile: string): Promise<string> {
  if (profile === "errors" && !client.output) return "-";
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nbd-conform-client-"));
  const out = path.join(dir, "out.raw");
  let results: readonly ConformResult[] = [];
  try {
    await runConformClient(
      {
        port: 0,
        profile,
        command: client.command.map((a) => a.replace("OUT", out)),
        expectOutput: client.output && profile !== "errors" ? out : undefined,
        common: { json: false, junit: undefined, timeoutMs: 5000, only: undefined },
      },
      { stdout: () => {}, stderr: () => {} },
      (r) => {
        results = r;
        return Promise.resolve(0);
      },
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const bad = results.filter((r) => r.outcome === "fail" || r.outcome === "warn");
  if (process.env.CONFORM_VERBOSE) {
    for (const b of bad) process.stderr.write(`${client.id} ${profile} ${b.id}: ${b.detail}\n`);
  }
  return bad.length === 0 ? "pass" : bad.map((b) => b.id.replace(/^client\./, "")).join(", ");
}

function render(cells: Map<string, Map<string, string>>): string {
  const out = [`| client | ${PROFILES.join(" | ")} |`, `| --- | ${PROFILES.map(() => "---").join(" | ")} |`];
  for (const c of CLIENTS) {
    out.push(`| ${c.label} <!-- ${c.id} --> | ${PROFILES.map((p) => cells.get(c.id)!.get(p)).join(" | ")} |`);
  }
  return out.join("\n") + "\n";
}

function parse(text: string): Map<string, Map<string, string>> {
  const lines = blockOf(text, "client-matrix").split("\n").filter((l) => l.startsWith("|"));
  const head = lines[0]!.split("|").slice(2, -1).map((x) => x.trim());
  const out = new Map<string, Map<string, string>>();
  for (const l of lines.slice(2)) {
    const cells = l.split("|").slice(1, -1).map((x) => x.trim());
    const id = /<!-- ([\w-]+) -->/.exec(cells[0]!)?.[1] ?? "";
    out.set(id, new Map(head.map((p, i) => [p, cells[i + 1] ?? ""])));
  }
  return out;
}

async function main(args: string[]): Promise<number> {
  const mode = args.includes("--write") ? "write" : args.includes("--check") ? "check" : "print";
  const file = args[args.indexOf(`--${mode}`) + 1];
  const cells = new Map<string, Map<string, string>>();
  for (const c of CLIENTS) {
    const row = new Map<string, string>();
    for (const p of PROFILES) row.set(p, await cell(c, p));
    cells.set(c.id, row);
    process.stderr.write(`conform-clients: ${c.label}: ${[...row.values()].join(" | ")}\n`);
  }
  const table = render(cells);
  if (mode === "print" || file === undefined) {
    process.stdout.write(table);
    return 0;
  }
  const text = fs.readFileSync(file, "utf8");
  if (mode === "write") {
    const a = text.indexOf("<!-- client-matrix:start -->") + "<!-- client-matrix:start -->".length;
    const b = text.indexOf("<!-- client-matrix:end -->");
    fs.writeFileSync(file, text.slice(0, a) + "\n" + table + text.slice(b));
    spawnSync(path.join(ROOT, "node_modules", ".bin", "deno"), ["fmt", file], { cwd: ROOT, stdio: "ignore" });
    return 0;
  }
  const committed = parse(text);
  const diffs: string[] = [];
  for (const c of CLIENTS) {
    for (const p of PROFILES) {
      const want = committed.get(c.id)?.get(p);
      const got = cells.get(c.id)!.get(p)!;
      if (want === undefined || !want.split(" / ").includes(got)) {
        diffs.push(`${c.id} / ${p}: ${got}, committed ${want}`);
      }
    }
  }
  if (diffs.length) {
    process.stderr.write(
      `conform-clients: ${diffs.length} results differ from ${file}:\n${
        diffs.map((d) => `  ${d}\n`).join("")
      }`,
    );
    return 1;
  }
  process.stderr.write(`conform-clients: every result matches ${file}\n`);
  return 0;
}

main(process.argv.slice(2).filter((a) => a !== "--")).then((code) => process.exit(code), (e) => {
  process.stderr.write(`conform-clients: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(2);
});
