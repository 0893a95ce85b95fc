// README code blocks type-check as written: every ```ts block of README.md (and of the other Markdown files
// given) is written to a module of its own, with "nbd-codec" and "nbd-codec/trace" (the npm names) and
// "jsr:@nbd/codec" / "@nbd/codec" (the JSR names) pointed at this checkout, and `deno check`ed with the
// project's compiler options. The names a block uses without defining them (the bytes a peer sent, the
// socket) are declared once below, with the types a reader would have.
// Run: deno run -A scripts/check-readme.ts [FILE.md ...]   (default: README.md)
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));

/** What README examples may use without defining it. */
const README_GLOBALS = `
import type { ReplyChunk as __ReplyChunk, Request as __Request } from "../mod.ts";
declare const greetingBytes: Uint8Array;
declare const replyBytes: Uint8Array;
declare const bytes: Uint8Array;
declare const data: Uint8Array;
declare const block: Uint8Array;
declare const c2sBytes: Uint8Array;
declare const s2cBytes: Uint8Array;
declare function send(bytes: Uint8Array): void;
declare function handle(events: readonly unknown[]): void;
declare const socket: { write(bytes: Uint8Array): void };
declare const socketFromClient: { on(event: "data", f: (b: Uint8Array) => void): void };
declare const socketFromServer: { on(event: "data", f: (b: Uint8Array) => void): void };
declare const chunk: __ReplyChunk;
declare const request: __Request;
`;

/** The ```ts blocks of a Markdown text, with the line each starts on. */
function tsBlocks(markdown: string): { line: number; code: string }[] {
  const out: { line: number; code: string }[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue;
    const start = i + 1;
    let j = start;
    while (j < lines.length && !/^```\s*$/.test(lines[j]!)) j++;
    out.push({ line: start + 1, code: lines.slice(start, j).join("\n") });
    i = j;
  }
  return out;
}

/** A block as a module of the checkout: package specifiers pointed at mod.ts and trace.ts. */
function blockModule(code: string): string {
  const mapped = code
    .replace(/from "(?:jsr:)?(?:nbd-codec|@nbd\/codec)\/trace"/g, 'from "../trace.ts"')
    .replace(/from "(?:jsr:)?(?:nbd-codec|@nbd\/codec)"/g, 'from "../mod.ts"');
  // A global the block declares itself (a complete example opens its own socket) is left out.
  const defines = (name: string) => new RegExp(`\\b(?:const|let|var|function)\\s+${name}\\b`).test(code);
  const globals = README_GLOBALS.split("\n")
    .filter((line) => {
      const m = /^declare (?:const|function) (\w+)/.exec(line);
      return m === null || !defines(m[1]!);
    })
    .join("\n");
  return `${globals}\n${mapped}\nexport {};\n`;
}

{
  const files = process.argv.slice(2);
  if (files.length === 0) files.push("README.md");
  const dir = path.join(root, ".readme-check");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  const written: string[] = [];
  const where = new Map<string, string>();
  try {
    for (const file of files) {
      for (const b of tsBlocks(readFileSync(path.join(root, file), "utf8"))) {
        const name = path.join(dir, `${path.basename(file, ".md")}-${b.line}.ts`);
        writeFileSync(name, blockModule(b.code));
        written.push(name);
        where.set(path.basename(name), `${file}:${b.line}`);
      }
    }
    if (written.length === 0) {
      console.error("check-readme: no ```ts blocks found");
      process.exit(1);
    }
    const r = spawnSync("npx", ["deno", "check", "--quiet", ...written], { cwd: root, encoding: "utf8" });
    if (r.status !== 0) {
      // Name the Markdown line of each failing block.
      let text = `${r.stdout}${r.stderr}`;
      for (const [f, w] of where) text = text.replaceAll(f, `${f} (${w})`);
      console.error(text);
      console.error(`check-readme: a code block does not type-check`);
      process.exit(1);
    }
    console.log(`check-readme: ${written.length} code blocks of ${files.join(", ")} type-check`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
