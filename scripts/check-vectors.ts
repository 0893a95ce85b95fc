// Vector checker: keeps vectors/*.json valid and canonical, and the coverage table in vectors/README.md
// current. Run: deno run -A scripts/check-vectors.ts [--write]
// (--write rewrites files into canonical form and regenerates the coverage table).
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { type CodeSpace, isRuleId, nameOf, RULES } from "../mod.ts";

const dir = fileURLToPath(new URL("../vectors/", import.meta.url));
const write = process.argv.includes("--write");
const errors: string[] = [];
const RESULTS = new Set(["valid", "invalid", "acceptable"]);
const CODES = new Set([
  "bad-magic",
  "bad-length",
  "reserved-bits",
  "bad-string",
  "string-too-long",
  "bad-value",
  "duplicate",
  "unknown-type",
  "unexpected-frame",
  "limit-exceeded",
  "truncated",
]);
const KEYS = [
  "id",
  "name",
  "comment",
  "flags",
  "decoder",
  "context",
  "hex",
  "repeat",
  "frame",
  "findings",
  "result",
  "code",
  "offset",
  "rule",
  "source",
];
/** Frame keys whose numbers are codes of a code space: they make the coverage table. */
const CODE_KEYS: Record<string, CodeSpace> = {
  option: "option",
  reply: "optionReply",
  info: "info",
  command: "command",
  chunkType: "replyType",
  error: "error",
};

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function collectCodes(v: Json, out: Set<string>, key = ""): void {
  if (key === "kind" && typeof v === "string" && /^(base|qemu):/.test(v)) {
    out.add(`context ${v}`);
  } else if (typeof v === "number" && key in CODE_KEYS) {
    out.add(nameOf(CODE_KEYS[key]!, v) ?? `${CODE_KEYS[key]} ${v} (unassigned)`);
  } else if (Array.isArray(v)) {
    if (key === "info") {
      for (const x of v) if (typeof x === "number") out.add(nameOf("info", x) ?? `info ${x}`);
    }
    for (const x of v) collectCodes(x, out, key);
  } else if (v !== null && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) collectCodes(x, out, k);
  }
}

/** A frame may write a list as { "repeat": [items], "times": n } (vectors/README.md, "Repetition"). */
function checkRepeatedLists(v: Json, verr: (m: string) => void): void {
  if (Array.isArray(v)) {
    for (const x of v) checkRepeatedLists(x, verr);
  } else if (v !== null && typeof v === "object") {
    if ("repeat" in v || "times" in v) {
      const ok = Object.keys(v).length === 2 && Array.isArray(v.repeat) && v.repeat.length > 0 &&
        typeof v.times === "number" && Number.isInteger(v.times) && v.times >= 1;
      if (!ok) verr('a repeated list is { "repeat": [items], "times": a positive integer }');
    }
    for (const x of Object.values(v)) checkRepeatedLists(x, verr);
  }
}

const coverage = new Map<string, Set<string>>();
function cover(row: string, id: string): void {
  if (!coverage.has(row)) coverage.set(row, new Set());
  coverage.get(row)!.add(id);
}

const ids = new Set<string>();
const files = readdirSync(dir)
  .filter((n) => n.endsWith(".json") && n !== "schema.json" && statSync(dir + n).isFile())
  .sort();
if (files.length === 0) errors.push("no vector files");
for (const name of files) {
  const text = readFileSync(dir + name, "utf8");
  let doc: { schema?: unknown; family?: unknown; description?: unknown; vectors?: unknown };
  try {
    doc = JSON.parse(text);
  } catch (e) {
    errors.push(`${name}: not JSON: ${e}`);
    continue;
  }
  const err = (m: string) => errors.push(`${name}: ${m}`);
  if (doc.schema !== "nbd-codec/vectors/v1") err(`schema must be "nbd-codec/vectors/v1"`);
  if (typeof doc.family !== "string" || doc.family === "") err("family must be a non-empty string");
  if (typeof doc.description !== "string") err("description must be a string");
  if (!Array.isArray(doc.vectors) || doc.vectors.length === 0) {
    err("vectors must be a non-empty array");
    continue;
  }
  for (const raw of doc.vectors as Record<string, Json>[]) {
    const id = String(raw.id);
    const verr = (m: string) => err(`${id}: ${m}`);
    for (const k of Object.keys(raw)) if (!KEYS.includes(k)) verr(`unknown key "${k}"`);
    if (typeof raw.id !== "string" || !/^[a-z0-9][a-z0-9-]*$/.test(raw.id)) {
      verr("id must be lowercase kebab-case");
    }
    if (ids.has(id)) verr("duplicate id");
    ids.add(id);
    for (const k of ["name", "decoder", "hex", "source", "result"]) {
      if (typeof raw[k] !== "string" || raw[k] === "") verr(`${k} must be a non-empty string`);
    }
    if (raw.comment !== undefined && typeof raw.comment !== "string") verr("comment must be a string");
    if (!Array.isArray(raw.flags) || raw.flags.some((f) => typeof f !== "string")) {
      verr("flags must be strings");
    }
    if (raw.context === null || typeof raw.context !== "object" || Array.isArray(raw.context)) {
      verr("context must be an object");
    }
    if (typeof raw.hex === "string" && !/^([0-9a-f]{2})*$/.test(raw.hex)) {
      verr("hex must be lowercase byte pairs");
    }
    if (raw.repeat !== undefined) {
      const r = raw.repeat as Record<string, Json>;
      const keys = r !== null && typeof r === "object" ? Object.keys(r).sort().join(",") : "";
      if (
        keys !== "hex,times" || typeof r.hex !== "string" || !/^([0-9a-f]{2})+$/.test(r.hex) ||
        typeof r.times !== "number" || !Number.isInteger(r.times) || r.times < 1
      ) verr('repeat must be { "hex": lowercase byte pairs, "times": a positive integer }');
    }
    if (raw.frame !== undefined) checkRepeatedLists(raw.frame, verr);
    const result = raw.result as string;
    if (!RESULTS.has(result)) verr(`result must be valid, invalid or acceptable`);
    if (result === "invalid") {
      if (typeof raw.code !== "string" || !CODES.has(raw.code)) verr("invalid vectors need a known code");
      if (typeof raw.offset !== "number") verr("invalid vectors need a byte offset");
      if (typeof raw.rule !== "string" || !isRuleId(raw.rule)) {
        verr("invalid vectors need a rule of codec/rules.ts");
      } else if (RULES[raw.rule].code !== raw.code) {
        verr(`rule ${raw.rule} is reported with ${RULES[raw.rule].code}`);
      }
      if (raw.frame !== undefined) verr("invalid vectors have no frame");
      cover(`${raw.decoder} rejects: ${raw.code}`, id);
    } else {
      if (raw.frame === undefined || raw.frame === null || typeof raw.frame !== "object") {
        verr("frame required");
      }
      if (raw.code !== undefined || raw.offset !== undefined) verr("code/offset only on invalid vectors");
    }
    if (result === "acceptable") {
      const f = raw.findings;
      if (!Array.isArray(f) || f.length === 0) verr("acceptable vectors need findings");
      else {
        for (const x of f as Record<string, Json>[]) {
          if (typeof x.code !== "string" || !CODES.has(x.code)) verr("finding with unknown code");
          if (typeof x.offset !== "number" || typeof x.rule !== "string") {
            verr("finding needs offset and rule");
          } else if (!isRuleId(x.rule)) verr(`finding names ${x.rule}, which is not in codec/rules.ts`);
          else if (RULES[x.rule].code !== x.code) {
            verr(`rule ${x.rule} is reported with ${RULES[x.rule].code}`);
          }
          cover(`${raw.decoder} flags: ${x.rule} (${x.code})`, id);
        }
      }
    } else if (raw.findings !== undefined) verr("findings only on acceptable vectors");
    if (result !== "invalid" && raw.frame !== undefined) {
      const codes = new Set<string>();
      collectCodes(raw.frame, codes);
      const type = (raw.frame as Record<string, Json>).type;
      if (codes.size === 0) cover(`${raw.decoder}: ${String(type)}`, id);
      for (const c of codes) cover(`${raw.decoder}: ${c}`, id);
    }
  }
  const canonical = JSON.stringify(doc, null, 2) + "\n";
  if (canonical !== text) {
    if (write) writeFileSync(dir + name, canonical);
    else err("not in canonical form (2-space JSON, trailing newline); run with --write");
  }
}

// Coverage table between markers in vectors/README.md
const readmePath = dir + "README.md";
const readme = readFileSync(readmePath, "utf8");
const BEGIN = "<!-- coverage:begin -->";
const END = "<!-- coverage:end -->";
const rows = [...coverage.entries()].sort(([a], [b]) => a.localeCompare(b))
  .map(([row, set]) => `| ${row} | ${[...set].sort().join(", ")} |`);
const table = `${BEGIN}\n| frame and code | vector ids |\n| --- | --- |\n${rows.join("\n")}\n${END}`;
const start = readme.indexOf(BEGIN);
const end = readme.indexOf(END);
if (start < 0 || end < 0) errors.push("vectors/README.md: coverage markers missing");
else {
  const next = readme.slice(0, start) + table + readme.slice(end + END.length);
  if (next !== readme) {
    if (write) writeFileSync(readmePath, next);
    else errors.push("vectors/README.md: coverage table is out of date; run with --write");
  }
}

if (errors.length > 0) {
  for (const e of errors) console.error(e);
  console.error(`check-vectors: ${errors.length} problem(s)`);
  process.exit(1);
}
console.log(
  `check-vectors: ${ids.size} vectors in ${files.length} files, ${coverage.size} coverage rows: ok`,
);
