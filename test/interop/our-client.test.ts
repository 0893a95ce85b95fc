/**
 * Our example client (examples/client.ts, run in-process here and as a CLI on Deno and Node) against
 * real NBD servers: qemu-nbd 10 (extended headers, qemu: contexts, block-status payload), nbdkit 1.32
 * (structured replies, --no-sr, --oldstyle, TLS required) and nbd-server 3.24 (simple replies).
 * Data written by our client is read back by another implementation where one is at hand.
 */
import { closeSync, openSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import {
  NbdClient,
  NbdCommandError,
  NbdOptionError,
  pattern,
  selftest,
  type SelftestResult,
} from "../../examples/client.ts";
import { Command, CommandFlag, OptionReply, TransmissionFlag } from "../../mod.ts";
import {
  type Capture,
  DENO,
  describePeers,
  freePort,
  type OurServer,
  Proc,
  runOk,
  startCapture,
  startOurServer,
  suiteDir,
  VITE_NODE,
  waitPort,
} from "./_peers.ts";

const MiB = 1024 * 1024;

async function captured<T>(name: string, port: number, fn: () => Promise<T>): Promise<T> {
  const cap: Capture = await startCapture(name, port);
  try {
    return await fn();
  } finally {
    await cap.stop();
  }
}

function expectPassed(r: SelftestResult): void {
  const failed = r.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail ?? ""}`);
  expect(failed).toEqual([]);
  expect(r.ok).toBe(true);
}

/** Our client's lenient decoders collect the server's spec violations; print them for the record. */
function reportFindings(label: string, c: NbdClient): string[] {
  const rules = c.findings.map((f) => f.rule);
  if (rules.length > 0) console.log(`${label}: findings: ${[...new Set(rules)].join(", ")}`);
  return rules;
}

/** Starts a peer server and waits for its port. */
async function startPeer(label: string, cmd: string, args: readonly string[], port: number): Promise<Proc> {
  const p = new Proc(label, cmd, args);
  try {
    await waitPort(port);
  } catch (e) {
    await p.stop();
    throw new Error(`${label} did not start: ${(e as Error).message}\n${p.stderr}`);
  }
  return p;
}

// ---------------------------------------------------------------------------------------------------------

describePeers("our client vs qemu-nbd 10", ["qemu-nbd", "qemu-img", "qemu-io"], () => {
  let dir: string;
  let port: number;
  let server: Proc;
  const contexts = ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0"];

  beforeAll(async () => {
    dir = suiteDir("qemu-nbd");
    const img = join(dir, "disk.qcow2");
    await runOk("qemu-img", ["create", "-q", "-f", "qcow2", img, "16M"]);
    await runOk("qemu-img", ["bitmap", "--add", img, "b0"]);
    port = await freePort();
    // -t: serve many connections; -A: qemu:allocation-depth; -B b0: qemu:dirty-bitmap:b0.
    server = await startPeer("qemu-nbd", "qemu-nbd", [
      "-f",
      "qcow2",
      "-t",
      "--bind",
      "127.0.0.1",
      "-p",
      String(port),
      "-x",
      "disk",
      "-D",
      "qemu disk",
      "-A",
      "-B",
      "b0",
      img,
    ], port);
  });
  afterAll(async () => {
    await server?.stop();
  });

  test("extended headers: every command verified, three contexts, block-status payload form", async () => {
    await captured("client-qemu-nbd-ext", port, async () => {
      const c = await NbdClient.open({ port, name: "disk", metaContexts: contexts });
      try {
        expect(c.mode).toBe("extended");
        expect(c.negotiation[0]).toBe("NBD_OPT_EXTENDED_HEADERS: ACK");
        expect([...c.contexts.values()].sort()).toEqual([...contexts].sort());
        expect(c.can(TransmissionFlag.BLOCK_STATUS_PAYLOAD)).toBe(true);
        expectPassed(await selftest(c));

        // A fresh write shows up as data, depth 1 (local) and dirty, in all three contexts.
        const at = 8 * MiB;
        await c.write(at, pattern(65536, 9));
        const m = await c.blockStatus(at, 65536);
        expect(m.get("base:allocation")![0]!.status & 1n).toBe(0n);
        expect(m.get("qemu:allocation-depth")![0]!.status).toBe(1n);
        expect(m.get("qemu:dirty-bitmap:b0")![0]!.status).toBe(1n);
        // The payload form asks about the dirty bitmap only.
        const dirtyId = [...c.contexts].find(([, n]) => n === "qemu:dirty-bitmap:b0")![0];
        const only = await c.blockStatus(at, 65536, { contextIds: [dirtyId] });
        expect([...only.keys()]).toEqual(["qemu:dirty-bitmap:b0"]);
        expect(only.get("qemu:dirty-bitmap:b0")![0]!.status).toBe(1n);
        reportFindings("qemu-nbd ext", c);
        await c.disconnect();
      } finally {
        c.destroy();
      }
    });
    // Another implementation reads what we wrote.
    const r = await runOk("qemu-io", [
      "-f",
      "raw",
      `nbd://127.0.0.1:${port}/disk`,
      "-c",
      `read -v ${8 * MiB} 16`,
    ]);
    const firstBytes = Array.from(pattern(16, 9), (b) => b.toString(16).padStart(2, "0")).join(" ");
    expect(r.stdout).toContain(firstBytes);
  });

  test("LIST, LIST_META_CONTEXT (qemu: wildcard) and INFO", async () => {
    await captured("client-qemu-nbd-list", port, async () => {
      const c = await NbdClient.connect({ port });
      try {
        expect(await c.negotiateReplies(true, true)).toBe("extended");
        const exports = await c.list();
        expect(exports).toEqual([{ name: "disk", description: "qemu disk" }]);
        const all = await c.listMetaContexts("disk", ["qemu:"]);
        expect(all.sort()).toEqual(["qemu:allocation-depth", "qemu:dirty-bitmap:b0"]);
        expect(await c.listMetaContexts("disk")).toContain("base:allocation");
        const info = await c.info("disk");
        expect(info.size).toBe(16n * BigInt(MiB));
        expect(info.description).toBe("qemu disk");
        expect(info.blockSize).toEqual({ minimum: 1, preferred: 4096, maximum: 32 * MiB });
        // qemu 10 does not know NBD_INFO_INIT_FLAGS (it ignores the request).
        expect(info.initFlags).toBeUndefined();
        await expect(c.info("nope")).rejects.toMatchObject({ reply: OptionReply.ERR_UNKNOWN });
        reportFindings("qemu-nbd list", c);
        await c.abort();
      } finally {
        c.destroy();
      }
    });
  });

  for (
    const [tag, ext, sr, mode] of [
      ["sr", false, true, "structured"],
      ["simple", false, false, "simple"],
    ] as const
  ) {
    test(`without extended headers: ${mode} replies, every command verified`, async () => {
      await captured(`client-qemu-nbd-${tag}`, port, async () => {
        const c = await NbdClient.open({
          port,
          name: "disk",
          extendedHeaders: ext,
          structuredReplies: sr,
          metaContexts: contexts,
        });
        try {
          expect(c.mode).toBe(mode);
          expect(c.can(TransmissionFlag.BLOCK_STATUS_PAYLOAD)).toBe(false);
          expectPassed(await selftest(c));
          reportFindings(`qemu-nbd ${tag}`, c);
          await c.disconnect();
        } finally {
          c.destroy();
        }
      });
    });
  }
});

// ---------------------------------------------------------------------------------------------------------

describePeers("our client vs nbdkit 1.32", ["nbdkit"], () => {
  async function withNbdkit<T>(
    name: string,
    args: readonly string[],
    fn: (port: number) => Promise<T>,
  ): Promise<T> {
    const port = await freePort();
    const p = await startPeer(`nbdkit ${name}`, "nbdkit", [
      "-f",
      "-i",
      "127.0.0.1",
      "-p",
      String(port),
      ...args,
    ], port);
    try {
      return await captured(`client-nbdkit-${name}`, port, () => fn(port));
    } finally {
      await p.stop();
    }
  }

  test("structured replies (nbdkit has no extended headers): every command verified", async () => {
    await withNbdkit("sr", ["memory", "16M"], async (port) => {
      const c = await NbdClient.open({ port });
      try {
        expect(c.negotiation.slice(0, 2)).toEqual([
          "NBD_OPT_EXTENDED_HEADERS: NBD_REP_ERR_UNSUP",
          "NBD_OPT_STRUCTURED_REPLY: ACK",
        ]);
        expect(c.mode).toBe("structured");
        expect([...c.contexts.values()]).toEqual(["base:allocation"]);
        expectPassed(await selftest(c));
        reportFindings("nbdkit sr", c);
        await c.disconnect();
      } finally {
        c.destroy();
      }
    });
  });

  test("--no-sr: simple replies, every command verified", async () => {
    await withNbdkit("no-sr", ["--no-sr", "memory", "16M"], async (port) => {
      const c = await NbdClient.open({ port });
      try {
        expect(c.mode).toBe("simple");
        expect(c.negotiation).toContain("NBD_OPT_STRUCTURED_REPLY: NBD_REP_ERR_UNSUP");
        expect(c.contexts.size).toBe(0);
        expectPassed(await selftest(c));
        await c.disconnect();
      } finally {
        c.destroy();
      }
    });
  });

  test("--oldstyle: no haggling; write and read back", async () => {
    await withNbdkit("oldstyle", ["--oldstyle", "memory", "16M"], async (port) => {
      const c = await NbdClient.open({ port });
      try {
        expect(c.handshake).toBe("oldstyle");
        expect(c.export?.size).toBe(16n * BigInt(MiB));
        const data = pattern(8192, 5);
        // nbdkit 1.32 in oldstyle mode rejects FUA/FLUSH/TRIM/ZERO although it advertises them (peers
        // README): only plain READ and WRITE are exercised.
        await c.write(4096, data);
        expect(await c.read(4096, 8192)).toEqual(data);
        await c.disconnect();
      } finally {
        c.destroy();
      }
    });
  });

  test("--mask-handshake=0 (non-fixed newstyle): EXPORT_NAME only; write and read back", async () => {
    await withNbdkit("non-fixed", ["--mask-handshake=0", "memory", "16M"], async (port) => {
      const c = await NbdClient.open({ port });
      try {
        expect(c.handshake).toBe("newstyle");
        expect(c.negotiation).toEqual(["NBD_OPT_EXPORT_NAME: accepted"]);
        expect(c.mode).toBe("simple");
        const data = pattern(8192, 6);
        await c.write(4096, data);
        expect(await c.read(4096, 8192)).toEqual(data);
        await c.flush();
        await c.disconnect();
      } finally {
        c.destroy();
      }
    });
  });

  test("--tls=require: our client sees NBD_REP_ERR_TLS_REQD and gives up cleanly", async () => {
    const dir = suiteDir("nbdkit-tls");
    const psk = join(dir, "keys.psk");
    writeFileSync(psk, `alice:${Buffer.from(pattern(32, 7)).toString("hex")}\n`, { mode: 0o600 });
    await withNbdkit("tls-required", ["--tls=require", `--tls-psk=${psk}`, "memory", "16M"], async (port) => {
      const err = await NbdClient.open({ port }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NbdOptionError);
      expect((err as NbdOptionError).reply).toBe(OptionReply.ERR_TLS_REQD);
      // The CLI reports it with exit code 3.
      const r = new Proc("client cli", DENO, [
        "run",
        "-A",
        "examples/client.ts",
        "--port",
        String(port),
        "list",
      ]);
      expect(await r.exited).toBe(3);
      expect(r.stderr).toMatch(/NBD_REP_ERR_TLS_REQD/);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------

describePeers("our client vs nbd-server 3.24", ["nbd-server"], () => {
  let dir: string;
  let img: string;
  beforeAll(() => {
    dir = suiteDir("nbd-server");
    img = join(dir, "disk.img");
    writeFileSync(img, new Uint8Array(16 * MiB));
  });

  /** nbd-server -d (foreground) serves one session: one server per connection. */
  async function withNbdServer<T>(name: string, fn: (port: number) => Promise<T>): Promise<T> {
    const port = await freePort();
    const config = join(dir, `${name}.conf`);
    writeFileSync(
      config,
      [
        "[generic]",
        `port = ${port}`,
        "listenaddr = 127.0.0.1",
        "allowlist = true",
        "[disk]",
        `exportname = ${img}`,
        "flush = true",
        "fua = true",
        "trim = true",
        "",
      ].join("\n"),
    );
    const p = await startPeer(`nbd-server ${name}`, "nbd-server", ["-C", config, "-d"], port);
    try {
      return await captured(`client-nbd-server-${name}`, port, () => fn(port));
    } finally {
      await p.stop();
    }
  }

  test("simple replies (no SR, no extended headers): every command verified, data lands in the file", async () => {
    await withNbdServer("selftest", async (port) => {
      const c = await NbdClient.open({ port, name: "disk" });
      try {
        expect(c.negotiation.slice(0, 2)).toEqual([
          "NBD_OPT_EXTENDED_HEADERS: NBD_REP_ERR_UNSUP",
          "NBD_OPT_STRUCTURED_REPLY: NBD_REP_ERR_UNSUP",
        ]);
        expect(c.mode).toBe("simple");
        expectPassed(await selftest(c));
        reportFindings("nbd-server", c);
        await c.disconnect();
      } finally {
        c.destroy();
      }
    });
    // The selftest's first pattern is at offset 0: read it from the exported file itself.
    const fd = openSync(img, "r");
    const buf = new Uint8Array(65536);
    readSync(fd, buf, 0, 65536, 0);
    closeSync(fd);
    expect(buf).toEqual(pattern(65536, 1));
  });

  test("LIST and INFO (nbd-server reports size 0 in INFO replies)", async () => {
    await withNbdServer("list", async (port) => {
      const c = await NbdClient.connect({ port });
      try {
        expect(await c.negotiateReplies(true, true)).toBe("simple");
        expect((await c.list()).map((e) => e.name)).toEqual(["disk"]);
        const info = await c.info("disk");
        expect(info.size).toBe(0n); // quirk 7 of the peers README
        await c.abort();
      } finally {
        c.destroy();
      }
    });
  });
});

// ---------------------------------------------------------------------------------------------------------

describePeers("our client (in-process and CLI) vs our server", [], () => {
  let server: OurServer;
  beforeAll(async () => {
    server = await startOurServer(["--size", String(16 * MiB)]);
  });
  afterAll(async () => {
    await server?.stop();
  });

  for (
    const [tag, flags, mode] of [
      ["ext", [], "extended"],
      ["sr", ["--no-extended-headers"], "structured"],
      ["simple", ["--no-extended-headers", "--no-structured-replies"], "simple"],
    ] as const
  ) {
    test(`deno client.ts selftest (${mode})`, async () => {
      const r = await captured(
        `cli-deno-${tag}`,
        server.port,
        () =>
          runOk(DENO, [
            "run",
            "-A",
            "examples/client.ts",
            "--port",
            String(server.port),
            ...flags,
            "--json",
            "selftest",
          ]),
      );
      const j = JSON.parse(r.stdout) as { ok: boolean; mode: string; findings: string[] };
      expect(j.mode).toBe(mode);
      expect(j.ok).toBe(true);
      expect(j.findings).toEqual([]);
    });
  }

  for (
    const [ext, sr, mode] of [
      [true, true, "extended"],
      [false, true, "structured"],
      [false, false, "simple"],
    ] as const
  ) {
    test(`error replies (${mode}): out of range, unknown command, bad flags, bad block-status payload`, async () => {
      const ro = await startOurServer(["--size", String(MiB), "--read-only"]);
      try {
        await captured(`errors-${mode}`, server.port, async () => {
          // checkRequests: false: the client session would refuse these requests itself; here the server's
          // answers to them are under test.
          const c = await NbdClient.open({
            port: server.port,
            extendedHeaders: ext,
            structuredReplies: sr,
            checkRequests: false,
          });
          try {
            expect(c.mode).toBe(mode);
            const errno = (p: Promise<unknown>) =>
              p.then(() => 0, (e: unknown) => (e instanceof NbdCommandError ? e.errno : -1));
            const size = Number(c.export!.size);
            expect(await errno(c.read(size - 512, 4096))).toBe(22);
            expect(await errno(c.write(size, pattern(512, 1)))).toBe(28);
            expect(await errno(c.trim(size, 4096))).toBe(22);
            expect(await errno(c.raw(0x42, 0, 0n, 0n))).toBe(22);
            expect(await errno(c.raw(0, 0x8000, 0n, 512n))).toBe(22);
            expect(await errno(c.raw(Command.TRIM, CommandFlag.REQ_ONE, 0n, 512n))).toBe(22);
            if (mode === "simple") {
              // DF needs structured replies; BLOCK_STATUS needs a context.
              expect(await errno(c.read(0, 512, { df: true }))).toBe(22);
              expect(await errno(c.raw(Command.BLOCK_STATUS, 0, 0n, 4096n))).toBe(22);
            } else {
              expect(await errno(c.blockStatus(size - 512, 4096))).toBe(22);
            }
            if (mode === "extended") {
              // The payload form: unknown and duplicate context ids fail with EINVAL.
              expect(await errno(c.blockStatus(0, 4096, { contextIds: [99] }))).toBe(22);
              expect(await errno(c.blockStatus(0, 4096, { contextIds: [1, 1] }))).toBe(22);
              expect((await c.blockStatus(0, 4096, { contextIds: [1] })).size).toBe(1);
            }
            // Still in sync after every error.
            expect((await c.read(0, 512)).length).toBe(512);
            expect(c.findings.map((f) => f.rule)).toEqual([]);
            await c.disconnect();
          } finally {
            c.destroy();
          }
        });
        await captured(`errors-read-only-${mode}`, ro.port, async () => {
          const c = await NbdClient.open({
            port: ro.port,
            extendedHeaders: ext,
            structuredReplies: sr,
            checkRequests: false,
          });
          try {
            expect(c.can(TransmissionFlag.READ_ONLY)).toBe(true);
            const errno = (p: Promise<unknown>) =>
              p.then(() => 0, (e: unknown) => (e instanceof NbdCommandError ? e.errno : -1));
            expect(await errno(c.write(0, pattern(512, 1)))).toBe(1);
            expect(await errno(c.zero(0, 4096))).toBe(1);
            expect(await errno(c.trim(0, 4096))).toBe(1);
            expect(await c.read(0, 4096)).toEqual(new Uint8Array(4096));
            await c.disconnect();
          } finally {
            c.destroy();
          }
        });
      } finally {
        await ro.stop();
      }
    });
  }

  test("node (vite-node) client.ts: list, write, read, map", async () => {
    const cli = (...args: string[]) =>
      runOk(VITE_NODE, ["examples/client.ts", "--", "--port", String(server.port), ...args], {
        timeoutMs: 90_000,
      });
    await captured("cli-node", server.port, async () => {
      const list = await cli("list");
      expect(list.stdout).toMatch(/export "disk"/);
      expect(list.stdout).toMatch(/init flags: 0x1 sparse|init flags: 0x3 sparse zero/);
      expect(list.stdout).toMatch(/contexts: \["base:allocation"\]/);
      await cli("write", String(12 * MiB), "0123456789abcdef");
      expect((await cli("read", String(12 * MiB), "8")).stdout.trim()).toBe("0123456789abcdef");
      const map = JSON.parse((await cli("--json", "map", String(12 * MiB), "65536")).stdout) as Record<
        string,
        { offset: number; length: number; status: number }[]
      >;
      expect(map["base:allocation"]![0]).toEqual({ offset: 12 * MiB, length: 4096, status: 0 });
    });
  });
});
