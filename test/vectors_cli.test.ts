// `nbd-codec vectors`: writes the corpus with its schema and conversation vectors, and checks anyone's file.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, test } from "vitest";
import { main } from "../bin/cli.ts";
import { brokenVector, VECTOR_SCHEMA_ID } from "../mod.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "nbd-codec-vectors-"));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await main(["vectors", ...args], {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
  }, { root: ROOT });
  return { code, stdout, stderr };
}

describe("nbd-codec vectors", () => {
  const out = path.join(TMP, "corpus");

  test("vectors --out DIR writes every vector file, both schemas and the conversations of every capture", async () => {
    const r = await run("--out", out);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const names = fs.readdirSync(out).sort();
    const vectorFiles = fs.readdirSync(path.join(ROOT, "vectors")).filter((f) => f.endsWith(".json"));
    for (const f of [...vectorFiles, "README.md", "conversations.json", "conversation-schema.json"]) {
      expect(names).toContain(f);
    }
    for (const f of vectorFiles) {
      expect(fs.readFileSync(path.join(out, f), "utf8")).toBe(
        fs.readFileSync(path.join(ROOT, "vectors", f), "utf8"),
      );
    }
    const conv = JSON.parse(fs.readFileSync(path.join(out, "conversations.json"), "utf8"));
    const captures = fs.readdirSync(path.join(ROOT, "vectors", "captures")).filter((f) =>
      f.endsWith(".c2s.bin")
    );
    expect(conv.conversations.length).toBe(captures.length);
    const qemu = conv.conversations.find((c: { id: string }) => c.id === "capture-qemu10-ext-io");
    expect(qemu.source).toMatch(/qemu10-ext-io\.pcap/);
    expect(qemu.name).toMatch(/qemu-io 10\.0/);
    expect(qemu.c2s).toBe(
      fs.readFileSync(path.join(ROOT, "vectors/captures/qemu10-ext-io.c2s.bin")).toString("hex"),
    );
    expect(r.stdout).toMatch(/conversations\.json \(\d+ conversations, \d+ steps\)/);
  });

  test("conversations.json has the keys its schema requires and allows, and nothing else", () => {
    const schema = JSON.parse(fs.readFileSync(path.join(out, "conversation-schema.json"), "utf8"));
    const doc = JSON.parse(fs.readFileSync(path.join(out, "conversations.json"), "utf8"));
    expect(doc.schema).toBe(schema.properties.schema.const);
    const conv = schema.properties.conversations.items;
    const step = conv.properties.events.items;
    const state = schema.$defs.state;
    const keysOk = (o: object, s: { required?: string[]; properties: object }) => {
      for (const k of s.required ?? []) expect(o).toHaveProperty(k);
      for (const k of Object.keys(o)) expect(Object.keys(s.properties)).toContain(k);
    };
    let steps = 0;
    for (const c of doc.conversations) {
      keysOk(c, conv);
      expect(c.id).toMatch(new RegExp(conv.properties.id.pattern));
      for (const e of c.events) {
        keysOk(e, step);
        keysOk(e.state, state);
        expect(step.properties.kind.enum).toContain(e.kind);
        steps++;
      }
    }
    expect(steps).toBeGreaterThan(400);
  });

  test("vectors --check accepts the written files: frame vectors and conversation vectors", async () => {
    const a = await run("--check", path.join(out, "request.json"));
    expect(a.code).toBe(0);
    const count =
      JSON.parse(fs.readFileSync(path.join(ROOT, "vectors", "request.json"), "utf8")).vectors.length;
    expect(count).toBeGreaterThan(50);
    expect(a.stdout).toContain(`request.json: ${count} vectors, every one agrees`);
    const b = await run("--check", path.join(out, "conversations.json"));
    expect(b.code).toBe(0);
    expect(b.stdout).toMatch(/conversations, every one agrees/);
  });

  test("vectors --check exits 1 and names the vector when our decoder disagrees", async () => {
    const v = brokenVector("chunk-none-done");
    const wrong = { ...v, result: "valid", findings: undefined };
    const f = path.join(TMP, "wrong.json");
    fs.writeFileSync(
      f,
      JSON.stringify({ schema: VECTOR_SCHEMA_ID, family: "x", description: "", vectors: [wrong] }),
    );
    const r = await run("--check", f);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /broken-chunk-none-done: valid, but strict decoding gives bad-value at offset 4/,
    );
    const j = await run("--check", f, "--json");
    expect(j.code).toBe(1);
    const report = JSON.parse(j.stdout);
    expect(report).toMatchObject({ kind: "vectors", ok: false, vectors: 1 });
    expect(report.problems[0].id).toBe("broken-chunk-none-done");
  });

  test("vectors exits 2 on unreadable input and bad arguments", async () => {
    const missing = await run("--check", path.join(TMP, "missing.json"));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^nbd-codec: cannot read /);
    const notJson = path.join(TMP, "bad.json");
    fs.writeFileSync(notJson, "{");
    expect((await run("--check", notJson)).code).toBe(2);
    for (const args of [["--frob"], ["--check"], ["--json"], ["--out", "x", "--check", "y"], ["stray"]]) {
      const r = await run(...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(/try nbd-codec vectors --help/);
    }
    const help = await run("--help");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/nbd-codec vectors --check FILE/);
  });
});
