// Checks that every quote of the rule catalogue (codec/rules.ts) is the spec's own words: each piece between
// "…" must appear, whitespace aside, in doc/proto.md of the branch the clause names.
//
//   deno run -A scripts/check-rule-quotes.ts MASTER_PROTO_MD EXT_HEADER_PROTO_MD
//
// (get them with `git show master:doc/proto.md` and `git show extension-ext-header:doc/proto.md` in a clone
// of NetworkBlockDevice/nbd). Exits 1 and lists the quotes not found, or a clause whose `ext` mark is wrong.
import { readFileSync } from "node:fs";
import process from "node:process";
import { IGNORED_BY_RECEIVER, type RuleClause, RULES } from "../codec/rules.ts";

const [masterPath, extPath] = process.argv.slice(2);
if (masterPath === undefined || extPath === undefined) {
  console.error("usage: check-rule-quotes.ts MASTER_PROTO_MD EXT_HEADER_PROTO_MD");
  process.exit(2);
}
const squash = (s: string): string => s.replace(/\s+/g, " ");
const master = squash(readFileSync(masterPath, "utf8"));
const ext = squash(readFileSync(extPath, "utf8"));

const clauses: [string, RuleClause][] = [];
for (const [id, rule] of Object.entries(RULES)) {
  const level: string = rule.level;
  if (level === "MUST" || level === "SHOULD") { for (const c of rule.clauses) clauses.push([id, c]); }
}
for (const x of IGNORED_BY_RECEIVER) {
  if (!x.clause.section.includes("proposal")) clauses.push([x.field, x.clause]);
}

let bad = 0;
for (const [id, c] of clauses) {
  const pieces = c.quote.split(" … ").map(squash);
  const inExt = pieces.every((p) => ext.includes(p));
  const inMaster = pieces.every((p) => master.includes(p));
  if (!inExt && !inMaster) {
    bad++;
    console.log(`${id}: not in the spec: ${c.quote}`);
  } else if ((c.ext === true) !== !inMaster) {
    bad++;
    console.log(`${id}: ext should be ${!inMaster}: ${c.quote}`);
  }
}
console.log(`${clauses.length} clauses checked, ${bad} wrong`);
process.exit(bad === 0 ? 0 : 1);
