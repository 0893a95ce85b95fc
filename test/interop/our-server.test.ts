/**
 * Real NBD clients (qemu-img, qemu-io, nbdinfo, libnbd's Python module, nbdcopy, a raw-socket script)
 * against our example server (examples/server.ts, on Deno; one suite on Node through vite-node), with
 * extended headers, with structured replies only, and with simple replies only.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import {
  type Capture,
  describePeers,
  HERE,
  type OurServer,
  randomBytes,
  run,
  runOk,
  sha256,
  startCapture,
  startOurServer,
  suiteDir,
} from "./_peers.ts";

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
/** Data regions of the source image; everything else is a hole. */
const DATA: readonly [number, number][] = [
  [0, MiB],
  [3 * MiB, MiB / 2],
  [5 * MiB + 4096, MiB - 4096],
  [8 * MiB - 65536, 65536],
];

/** A sparse raw image of SIZE bytes with random data in DATA. */
function makeSourceImage(path: string): void {
  const fd = openSync(path, "w");
  try {
    // The last region ends at SIZE, which gives the file its size.
    DATA.forEach(([off, len], i) => writeSync(fd, randomBytes(len, 1000 + i), 0, len, off));
  } finally {
    closeSync(fd);
  }
}

/** The base:allocation map our server must report for that image: data (0) and hole,zero (3). */
function expectedMap(): { offset: number; length: number; type: number }[] {
  const out: { offset: number; length: number; type: number }[] = [];
  let pos = 0;
  for (const [off, len] of DATA) {
    if (off > pos) out.push({ offset: pos, length: off - pos, type: 3 });
    out.push({ offset: off, length: len, type: 0 });
    pos = off + len;
  }
  if (pos < SIZE) out.push({ offset: pos, length: SIZE - pos, type: 3 });
  return out;
}

async function captured<T>(name: string, port: number, fn: () => Promise<T>): Promise<T> {
  const cap: Capture = await startCapture(name, port);
  try {
    return await fn();
  } finally {
    await cap.stop();
  }
}

function uri(server: OurServer, name = "disk"): string {
  return `nbd://127.0.0.1:${server.port}/${name}`;
}

const MODES = [
  { title: "extended headers", args: [] as string[], tag: "ext", expect: "NBD_OPT_EXTENDED_HEADERS" },
  {
    title: "structured replies only",
    args: ["--no-extended-headers"],
    tag: "sr",
    expect: "NBD_OPT_STRUCTURED_REPLY",
  },
  {
    title: "simple replies only",
    args: ["--no-extended-headers", "--no-structured-replies"],
    tag: "simple",
    expect: "NBD_OPT_GO",
  },
];

for (const mode of MODES) {
  describePeers(`qemu 10 clients vs our server (${mode.title})`, ["qemu-img", "qemu-io", "nbdinfo"], () => {
    let server: OurServer;
    let dir: string;
    beforeAll(async () => {
      dir = suiteDir(`qemu-${mode.tag}`);
      server = await startOurServer(["--size", String(SIZE), ...mode.args]);
    });
    afterAll(async () => {
      await server?.stop();
    });

    test(`qemu-img convert copies a sparse random image in and out unchanged (${mode.tag})`, async () => {
      const src = join(dir, "src.img");
      const back = join(dir, "back.img");
      makeSourceImage(src);
      await captured(`qemu-img-convert-${mode.tag}`, server.port, async () => {
        await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, uri(server)]);
        await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri(server), back]);
      });
      expect(sha256(back)).toBe(sha256(src));
      // qemu's client asks for extended headers first and falls back.
      const opts = server.options();
      expect(opts).toContain(mode.expect);
      if (mode.tag !== "ext") expect(opts).toContain("NBD_OPT_EXTENDED_HEADERS");
      // Quirk 1 of the peers README: qemu 10 sends extended WRITE without NBD_CMD_FLAG_PAYLOAD_LEN.
      if (mode.tag === "ext") expect(server.proc.stderr).toMatch(/tolerated: write-payload-len/);
    });

    if (mode.tag !== "simple") {
      test(`nbdinfo --map reports the image's allocation (${mode.tag})`, async () => {
        const r = await captured(
          `nbdinfo-map-${mode.tag}`,
          server.port,
          () => runOk("nbdinfo", ["--map", "--json", uri(server)]),
        );
        const map = (JSON.parse(r.stdout) as { offset: number; length: number; type: number }[])
          .map(({ offset, length, type }) => ({ offset, length, type }));
        expect(map).toEqual(expectedMap());
      });
    }

    test(`qemu-io writes, reads, zeroes and discards (${mode.tag})`, async () => {
      const base = 6 * MiB;
      const r = await captured(`qemu-io-${mode.tag}`, server.port, () =>
        runOk("qemu-io", [
          "-f",
          "raw",
          uri(server),
          "-c",
          `write -P 0xa5 ${base} 256k`,
          "-c",
          `read -P 0xa5 ${base} 256k`,
          "-c",
          `write -f -P 0x5a ${base + 65536} 4k`,
          "-c",
          `read -P 0x5a ${base + 65536} 4k`,
          "-c",
          `write -z ${base} 64k`,
          "-c",
          `read -P 0 ${base} 64k`,
          "-c",
          `write -z -u ${base + 131072} 64k`,
          "-c",
          `read -P 0 ${base + 131072} 64k`,
          "-c",
          `write -z -n ${base + 196608} 4k`,
          "-c",
          `read -P 0 ${base + 196608} 4k`,
          "-c",
          `discard ${base} 128k`,
          "-c",
          `read -P 0xa5 ${base + 200704} 4k`,
          "-c",
          "flush",
        ]));
      expect(r.stdout + r.stderr).not.toMatch(/fail|error|mismatch/i);
      expect(r.stdout.match(/^read /gm)?.length).toBe(6);
    });

    test(`qemu-io reads past the end fail cleanly (${mode.tag})`, async () => {
      const r = await captured(
        `qemu-io-range-${mode.tag}`,
        server.port,
        () =>
          run("qemu-io", ["-f", "raw", uri(server), "-c", `read ${SIZE - 512} 4k`, "-c", "read -P 0 6m 4k"]),
      );
      // qemu checks the range itself (EIO, nothing sent); the session stays usable.
      expect(r.stdout + r.stderr).toMatch(/read failed: Input\/output error/);
      expect(r.stdout).toMatch(/read 4096\/4096 bytes at offset 6291456/);
    });
  });
}

describePeers("nbdinfo vs our server", ["nbdinfo"], () => {
  let server: OurServer;
  beforeAll(async () => {
    server = await startOurServer([
      "--size",
      String(SIZE),
      "--name",
      "disk",
      "--description",
      "interop disk",
    ]);
  });
  afterAll(async () => {
    await server?.stop();
  });

  test("nbdinfo --list shows the export, its description and base:allocation", async () => {
    const r = await captured(
      "nbdinfo-list",
      server.port,
      () => runOk("nbdinfo", ["--list", `nbd://127.0.0.1:${server.port}`]),
    );
    expect(r.stdout).toMatch(/export="disk":/);
    expect(r.stdout).toMatch(/description: interop disk/);
    expect(r.stdout).toMatch(/base:allocation/);
  });

  test("nbdinfo --json shows size, flags, block sizes and contexts", async () => {
    const r = await captured("nbdinfo-json", server.port, () => runOk("nbdinfo", ["--json", uri(server)]));
    const j = JSON.parse(r.stdout) as {
      protocol: string;
      exports: Record<string, unknown>[];
    };
    expect(j.protocol).toBe("newstyle-fixed");
    const e = j.exports[0]!;
    expect(e["export-size"]).toBe(SIZE);
    expect(e["contexts"]).toEqual(["base:allocation"]);
    expect(e["is_read_only"]).toBe(false);
    for (
      const k of [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_fast_zero",
        "can_df",
        "can_multi_conn",
        "can_cache",
      ]
    ) {
      expect(e[k], k).toBe(true);
    }
    expect(e["block_size_minimum"]).toBe(1);
    expect(e["block_size_preferred"]).toBe(4096);
    expect(e["block_size_maximum"]).toBe(32 * MiB);
  });

  test("nbdinfo --json --list on a read-only server", async () => {
    const ro = await startOurServer(["--size", String(MiB), "--read-only", "--name", "ro"]);
    try {
      const r = await captured(
        "nbdinfo-list-ro",
        ro.port,
        () => runOk("nbdinfo", ["--json", "--list", `nbd://127.0.0.1:${ro.port}`]),
      );
      const j = JSON.parse(r.stdout) as { exports: Record<string, unknown>[] };
      expect(j.exports.map((e) => e["export-name"])).toEqual(["ro"]);
      expect(j.exports[0]!["is_read_only"]).toBe(true);
    } finally {
      await ro.stop();
    }
  });
});

const PY = "/usr/bin/python3";

describePeers("qemu-nbd --list (qemu 10's listing client) vs our server", ["qemu-nbd"], () => {
  test("qemu-nbd -L shows the export, its size, flags, block sizes and base:allocation", async () => {
    const server = await startOurServer(["--size", String(SIZE), "--description", "listed by qemu"]);
    try {
      const r = await captured(
        "qemu-nbd-list",
        server.port,
        () => runOk("qemu-nbd", ["-L", "-b", "127.0.0.1", "-p", String(server.port)]),
      );
      expect(r.stdout).toMatch(/exports available: 1/);
      expect(r.stdout).toMatch(/export: 'disk'/);
      expect(r.stdout).toMatch(/description: listed by qemu/);
      expect(r.stdout).toMatch(new RegExp(`size:\\s+${SIZE}`));
      expect(r.stdout).toMatch(/min block: 1/);
      expect(r.stdout).toMatch(/base:allocation/);
      // qemu's listing client ends with NBD_OPT_ABORT.
      expect(server.options()).toContain("NBD_OPT_ABORT");
    } finally {
      await server.stop();
    }
  });
});

describePeers("libnbd (nbdsh, python3 nbd module) vs our server", ["python3-nbd", "nbdsh"], () => {
  for (
    const variant of [
      { tag: "sr", args: [] as string[], py: [] as string[] },
      { tag: "no-sr", args: [], py: ["--no-sr"] },
      { tag: "read-only", args: ["--read-only"], py: ["--read-only"] },
      { tag: "read-only-no-sr", args: ["--read-only"], py: ["--read-only", "--no-sr"] },
    ]
  ) {
    test(`every option and command, verified (${variant.tag})`, async () => {
      const server = await startOurServer(["--size", String(SIZE), ...variant.args]);
      try {
        const script = join(HERE, "libnbd_commands.py");
        const argv = [script, String(server.port), "disk", ...variant.py];
        // One variant goes through nbdsh itself (which runs the python3 first on PATH: /usr/bin's).
        const r = await captured(
          `libnbd-commands-${variant.tag}`,
          server.port,
          () =>
            variant.tag === "sr"
              ? runOk("nbdsh", [
                "-c",
                `import sys; sys.argv = ${JSON.stringify(argv)}; exec(open(sys.argv[0]).read())`,
              ])
              : runOk(PY, argv),
        );
        const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as {
          checks: string[];
          structured: boolean;
        };
        expect(out.structured).toBe(!variant.py.includes("--no-sr"));
        expect(out.checks).toContain("opt_go");
        expect(out.checks).toContain("opt_abort");
        // libnbd 1.14 never sends NBD_OPT_EXTENDED_HEADERS.
        expect(server.options()).not.toContain("NBD_OPT_EXTENDED_HEADERS");
      } finally {
        await server.stop();
      }
    });
  }
});

interface RawInfo {
  size: number;
  transmission_flags: number;
  name: string;
  description: string;
  block_size: number[];
  init_flags: number;
}

describePeers("raw-socket script vs our server", ["python3", "qemu-io"], () => {
  test("NBD_INFO_INIT_FLAGS: SPARSE when a hole exists, ZERO when everything reads as zero", async () => {
    const small = 16384;
    const server = await startOurServer(["--size", String(small)]);
    const info = async (): Promise<RawInfo> => {
      const r = await runOk(PY, [join(HERE, "raw_nbd.py"), String(server.port), "info", "disk"]);
      return JSON.parse(r.stdout.trim().split("\n").pop()!) as RawInfo;
    };
    const io = (...cmds: string[]) =>
      runOk("qemu-io", ["-f", "raw", uri(server), ...cmds.flatMap((c) => ["-c", c])]);
    try {
      await captured("raw-init-flags", server.port, async () => {
        const fresh = await info();
        expect(fresh.init_flags).toBe(3); // all holes: sparse and zero
        expect(fresh.size).toBe(small);
        expect(fresh.name).toBe("disk");
        expect(fresh.block_size).toEqual([1, 4096, 32 * MiB]);
        await io("write -P 0x11 0 4k");
        expect((await info()).init_flags).toBe(1); // a hole left, not all zero
        await io(`write -P 0x22 4k ${small - 4096}`);
        expect((await info()).init_flags).toBe(0); // fully allocated data
        await io(`write -z 0 ${small}`); // qemu-io -z without -u: NO_HOLE, allocated zeroes
        expect((await info()).init_flags).toBe(2); // no hole, all zero
        await io(`write -z -u 0 ${small}`);
        expect((await info()).init_flags).toBe(3);
      });
    } finally {
      await server.stop();
    }
  });

  test("option errors: ERR_UNSUP, ERR_INVALID, ERR_POLICY, ERR_UNKNOWN, ERR_EXT_HEADER_REQD, ABORT", async () => {
    const server = await startOurServer(["--size", String(MiB)]);
    try {
      const r = await captured(
        "raw-options",
        server.port,
        () => runOk(PY, [join(HERE, "raw_nbd.py"), String(server.port), "options", "disk"]),
      );
      const { replies } = JSON.parse(r.stdout.trim().split("\n").pop()!) as {
        replies: Record<string, unknown>;
      };
      expect(replies).toEqual({
        "unknown option": 0x80000001,
        "LIST with data": 0x80000003,
        "SET_META_CONTEXT before structured replies": 0x80000003,
        "STARTTLS": 0x80000002,
        "INFO of an unknown export": 0x80000006,
        "STRUCTURED_REPLY with data": 0x80000003,
        "EXTENDED_HEADERS": 1,
        "STRUCTURED_REPLY after EXTENDED_HEADERS": 0x8000000a,
        "ABORT": 1,
        "closed after ABORT": true,
      });
    } finally {
      await server.stop();
    }
  });

  for (const ro of [false, true]) {
    test(`command errors: unknown command, bad flag, out of range${ro ? ", read-only" : ""}`, async () => {
      const server = await startOurServer(["--size", String(MiB), ...(ro ? ["--read-only"] : [])]);
      try {
        const r = await captured(
          `raw-commands${ro ? "-ro" : ""}`,
          server.port,
          () => runOk(PY, [join(HERE, "raw_nbd.py"), String(server.port), "commands", "disk"]),
        );
        const { errors } = JSON.parse(r.stdout.trim().split("\n").pop()!) as {
          errors: Record<string, unknown>;
        };
        expect(errors).toEqual({
          "unknown command 0x42": 22,
          "READ beyond the end": 22,
          "unknown command flag": 22,
          "WRITE": ro ? 1 : 0,
          "WRITE beyond the end": ro ? 1 : 28,
          "TRIM beyond the end": ro ? 1 : 22,
          "BLOCK_STATUS without contexts": 22,
          "FLUSH": 0,
          "closed after DISC": true,
        });
      } finally {
        await server.stop();
      }
    });
  }

  test("EXPORT_NAME: 10-byte reply with NO_ZEROES, 134 without; unknown name closes", async () => {
    const server = await startOurServer(["--size", String(MiB)]);
    try {
      const r = await captured(
        "raw-export-name",
        server.port,
        () => runOk(PY, [join(HERE, "raw_nbd.py"), String(server.port), "exportname", "disk"]),
      );
      const j = JSON.parse(r.stdout.trim().split("\n").pop()!) as Record<string, { size: number }>;
      // Client flags 3 (fixed, no zeroes): 10 bytes; 1 (fixed) and 0 (non-fixed newstyle): 134 bytes.
      expect(j["flags_3"]).toEqual({ length: 10, size: MiB, flags: 0xd6d });
      expect(j["flags_1"]).toEqual({ length: 134, size: MiB, flags: 0xd6d });
      expect(j["flags_0"]).toEqual({ length: 134, size: MiB, flags: 0xd6d });
      expect(j["unknown export closes"]).toBe(true);
    } finally {
      await server.stop();
    }
  });
});

describePeers("nbdcopy (several connections) vs our server", ["nbdcopy"], () => {
  test("nbdcopy --connections=4 copies a sparse image in and out unchanged", async () => {
    const dir = suiteDir("nbdcopy");
    const src = join(dir, "src.img");
    const back = join(dir, "back.img");
    makeSourceImage(src);
    const server = await startOurServer(["--size", String(SIZE)]);
    try {
      await captured("nbdcopy", server.port, async () => {
        await runOk("nbdcopy", ["--connections=4", "--threads=4", "--flush", src, uri(server)]);
        await runOk("nbdcopy", ["--connections=4", "--threads=4", uri(server), back]);
      });
      expect(sha256(back)).toBe(sha256(src));
      // Every connection ends its haggling with GO: 2 copies x 4 connections.
      expect(server.options().filter((o) => o === "NBD_OPT_GO").length).toBeGreaterThanOrEqual(8);
      const map = await runOk("nbdinfo", ["--map", "--json", uri(server)]);
      const got = (JSON.parse(map.stdout) as { offset: number; length: number; type: number }[])
        .map(({ offset, length, type }) => ({ offset, length, type }));
      expect(got).toEqual(expectedMap());
    } finally {
      await server.stop();
    }
  });
});

describePeers("qemu-img vs our server on Node (vite-node)", ["qemu-img"], () => {
  test("qemu-img convert in and out through the Node build of the server", async () => {
    const dir = suiteDir("node");
    const src = join(dir, "src.img");
    const back = join(dir, "back.img");
    makeSourceImage(src);
    const server = await startOurServer(["--size", String(SIZE)], "node");
    try {
      await captured("qemu-img-convert-node", server.port, async () => {
        await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, uri(server)]);
        await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri(server), back]);
      });
      expect(sha256(back)).toBe(sha256(src));
    } finally {
      await server.stop();
    }
  });
});
