import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConformPeerOptions, ConformPeerServer } from "../codec/_conform_peer.ts";
import { conformMain, parseNbdUri, parseWriteRange } from "../bin/conform.ts";
import { main } from "../bin/cli.ts";

/** Serves the in-process peer core on 127.0.0.1 (a fresh core per connection). */
async function serve(options: ConformPeerOptions): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer((socket) => {
    const s = new ConformPeerServer(options);
    const flush = (): void => {
      for (const b of s.take()) socket.write(b);
      if (s.closing) socket.end();
    };
    flush();
    socket.on("error", () => {});
    socket.on("data", (d: Uint8Array) => {
      s.receive(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      flush();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const a = server.address() as net.AddressInfo;
  return { port: a.port, close: () => new Promise((r) => server.close(() => r())) };
}

function io(): { out: string[]; err: string[]; stdout: (t: string) => void; stderr: (t: string) => void } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, stdout: (t) => void out.push(t), stderr: (t) => void err.push(t) };
}

describe("nbd-codec conform (command line)", () => {
  let good: { port: number; close: () => Promise<void> };
  let bad: { port: number; close: () => Promise<void> };
  let dir: string;
  beforeAll(async () => {
    good = await serve({ secondContext: true });
    bad = await serve({ faults: new Set(["opt.unknown", "tx.unknown-flag"]) });
    dir = mkdtempSync(join(tmpdir(), "conform-cli-"));
  });
  afterAll(async () => {
    await good.close();
    await bad.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("exits 0 with a table when every MUST passes, writes skipped without --allow-writes", async () => {
    const o = io();
    const code = await main([
      "conform",
      "server",
      `nbd://127.0.0.1:${good.port}/disk`,
      "--only",
      "opt,write.read-back",
    ], o);
    expect(code).toBe(0);
    const text = o.out.join("");
    expect(text).toMatch(/^PASS +MUST +opt\.unknown/m);
    expect(text).toMatch(/^SKIP +MUST +write\.read-back +writes not allowed \(use --allow-writes\)/m);
  });

  it("runs writing cases inside the range given", async () => {
    const o = io();
    const code = await conformMain([
      "server",
      `nbd://127.0.0.1:${good.port}/disk`,
      "--only",
      "write",
      "--allow-writes",
      "64K:64K",
    ], o);
    expect(code).toBe(0);
    expect(o.out.join("")).toMatch(/^PASS +MUST +write\.read-back/m);
  });

  it("exits 1 when a MUST fails, with one JSON object per case and JUnit XML", async () => {
    const o = io();
    const junit = join(dir, "r.xml");
    const code = await conformMain([
      "server",
      `nbd://127.0.0.1:${bad.port}/disk`,
      "--only",
      "opt.unknown,tx.unknown-flag",
      "--json",
      "--junit",
      junit,
    ], o);
    expect(code).toBe(1);
    const lines = o.out.join("").trim().split("\n").map((l) => JSON.parse(l) as Record<string, string>);
    expect(lines.map((l) => [l.id, l.outcome])).toEqual([["opt.unknown", "fail"], [
      "tx.unknown-flag",
      "warn",
    ]]);
    expect(lines[0]!.quote).toMatch(/NBD_REP_ERR_UNSUP/);
    const xml = readFileSync(junit, "utf8");
    expect(xml).toMatch(/<testsuite name="conform-server" tests="2" failures="1" skipped="0">/);
    expect(xml).toMatch(/<failure message="unknown option answered with NBD_REP_ERR_INVALID">/);
  });

  it("exits 2 for usage errors, remote hosts and unreachable servers", async () => {
    for (
      const args of [["server"], ["server", "http://x/"], ["server", "nbd://10.1.2.3/disk"], ["bogus"], [
        "server",
        "nbd://127.0.0.1:1/x",
        "--allow-writes",
        "1:",
      ]]
    ) {
      const o = io();
      expect(await conformMain(args, o), args.join(" ")).toBe(2);
      expect(o.err.join("")).toMatch(/nbd-codec conform: /);
    }
    const closed = await serve({});
    const port = closed.port;
    await closed.close();
    const o = io();
    expect(await conformMain(["server", `nbd://127.0.0.1:${port}/disk`, "--timeout", "1000"], o)).toBe(2);
    expect(o.err.join("")).toMatch(/cannot connect/);
  });

  it("parses nbd URIs and write ranges", () => {
    expect(parseNbdUri("nbd://127.0.0.1:10809/my%20disk")).toEqual({
      host: "127.0.0.1",
      port: 10809,
      exportName: "my disk",
    });
    expect(parseNbdUri("nbd://[::1]/")).toEqual({ host: "::1", port: 10809, exportName: "" });
    expect(parseNbdUri("nbd+unix:///e?socket=/tmp/s")).toEqual({ socket: "/tmp/s", exportName: "e" });
    expect(parseWriteRange("1M:64K")).toEqual({ offset: 1n << 20n, length: 65536n });
    expect(parseWriteRange("all")).toEqual({ offset: 0n });
  });

  it("lists the catalogue", async () => {
    const o = io();
    expect(await conformMain(["list"], o)).toBe(0);
    expect(o.out.join("")).toMatch(/^read\.coverage +MUST/m);
  });
});
