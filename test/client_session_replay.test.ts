/**
 * Replay: the server bytes of every real capture (vectors/captures/, recorded from real peers) fed into the
 * client session, which issues the same options and commands as the capture's client did (decoded from its
 * client-to-server bytes). The session must produce the client's bytes again and decode the server's
 * without a finding, except those a capture's own notes explain.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import {
  ClientSession,
  ClientStreamDecoder,
  Command,
  CommandFlag,
  type CommandResult,
  isNbdLocalError,
  type OptionRequest,
  type Request,
} from "../mod.ts";

const dir = fileURLToPath(new URL("../vectors/captures/", import.meta.url));
const names = existsSync(dir)
  ? readdirSync(dir).filter((f) => f.endsWith(".s2c.bin")).map((f) => f.replace(".s2c.bin", "")).sort()
  : [];
const bytes = (p: string) => new Uint8Array(readFileSync(p));

/** Captures whose client sent bytes our session would not produce, and why (vectors/captures/README.md). */
const CLIENT_QUIRKS: Record<string, string> = {
  // qemu 10's client sends extended WRITEs without NBD_CMD_FLAG_PAYLOAD_LEN (peers README quirk 1); the
  // session always sets it, as the extension requires.
  "qemu10-ext-io": "WRITE without PAYLOAD_LEN",
  "qemu10-img-convert-ours-ext": "WRITE without PAYLOAD_LEN",
  "qemu10-io-ours-ext-hole": "WRITE without PAYLOAD_LEN",
};

type ClientFrame = { kind: "flags" } | { kind: "option"; o: OptionRequest } | { kind: "request"; r: Request };

function clientFrames(c2s: Uint8Array): ClientFrame[] {
  const d = new ClientStreamDecoder();
  const out: ClientFrame[] = [];
  for (const e of [...d.push(c2s), ...d.end()]) {
    if (e.event !== "frame") continue;
    const f = e.frame;
    if (f.type === "client-flags") out.push({ kind: "flags" });
    else if (f.type === "option-request") out.push({ kind: "option", o: f });
    else if (f.type === "request") {
      // A payload spanning the decoder's single chunk is a view; copy it to keep it past later pushes.
      out.push({ kind: "request", r: f });
    }
  }
  return out;
}

function issue(s: ClientSession, r: Request): void {
  const base = { flags: r.flags & ~CommandFlag.PAYLOAD_LEN, cookie: r.cookie, check: false };
  switch (r.command) {
    case Command.READ:
      s.read(r.offset, Number(r.length), base);
      return;
    case Command.WRITE:
      s.write(r.offset, r.data ?? new Uint8Array(0), base);
      return;
    case Command.DISC:
      s.disconnect({ flags: r.flags, cookie: r.cookie });
      return;
    case Command.BLOCK_STATUS:
      if (r.blockStatus !== undefined) {
        s.blockStatus(r.offset, r.blockStatus.effectLength, {
          ...base,
          contextIds: r.blockStatus.contextIds,
        });
        return;
      }
      s.blockStatus(r.offset, r.length, base);
      return;
    default:
      s.command(r.command, r.offset, r.length, base);
  }
}

interface Replay {
  sent: Uint8Array;
  results: CommandResult[];
  rules: string[];
  options: { option: number; ok: boolean }[];
  phase: string;
}

function replay(name: string): Replay {
  const c2s = bytes(`${dir}${name}.c2s.bin`);
  const s2c = bytes(`${dir}${name}.s2c.bin`);
  const s = new ClientSession({ negotiateReplies: false, go: false, checkRequests: false });
  const results: CommandResult[] = [];
  const options: { option: number; ok: boolean }[] = [];
  let pos = 0;
  // Never past the end of a frame (`needed` is a lower bound): a frame completes only at its last byte, by
  // when the session has sent everything the capture's client had sent before it.
  const feed = (): boolean => {
    if (pos >= s2c.length) return false;
    const n = Math.max(1, s.needed);
    for (const e of s.receive(s2c.subarray(pos, pos + n))) {
      if (e.type === "reply") results.push(e.result);
      if (e.type === "option") options.push({ option: e.option, ok: e.ok });
    }
    pos += n;
    return true;
  };
  for (const f of clientFrames(c2s)) {
    for (;;) {
      const st = s.state;
      if (st.phase === "closed" || st.phase === "tls") break;
      if (f.kind === "flags" && st.phase !== "greeting") break;
      if (f.kind === "option" && st.phase === "options" && st.pendingOptions === 0) {
        s.option(f.o);
        break;
      }
      if (f.kind === "request" && st.phase === "transmission") {
        try {
          issue(s, f.r);
          break;
        } catch (e) {
          if (!isNbdLocalError(e) || e.code !== "duplicate-cookie") throw e;
        }
      }
      if (!feed()) throw new Error(`${name}: the server bytes ran out before the client's next frame`);
    }
  }
  while (feed());
  s.end();
  const sent = s.takeOutput();
  const all = new Uint8Array(sent.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of sent) {
    all.set(b, at);
    at += b.length;
  }
  return { sent: all, results, rules: s.findings.map((f) => f.rule), options, phase: s.state.phase };
}

describe("client session replays the server side of real captures", () => {
  test("there are captures to replay", () => {
    expect(names.length).toBeGreaterThanOrEqual(20);
  });

  for (const name of names) {
    test(`${name}: no finding, and the client's own bytes again`, () => {
      const r = replay(name);
      expect(r.rules).toEqual([]);
      const c2s = bytes(`${dir}${name}.c2s.bin`);
      if (name === "nbdkit-tls-psk") {
        // Up to the STARTTLS ACK; TLS records follow (20 bytes of client flags and STARTTLS).
        expect(r.sent).toEqual(c2s.subarray(0, 20));
        expect(r.options).toEqual([{ option: 5, ok: true }]);
      } else if (CLIENT_QUIRKS[name] === undefined) {
        expect(r.sent.length).toBe(c2s.length);
        expect(r.sent).toEqual(c2s);
      } else {
        expect(r.sent.length).toBeGreaterThan(0);
      }
    });
  }

  test("libnbd-qemu10-sr: READ assembled from data and hole chunks; errors with qemu's messages", () => {
    if (!names.includes("libnbd-qemu10-sr")) return;
    const r = replay("libnbd-qemu10-sr");
    const reads = r.results.filter((x) => x.command === Command.READ);
    expect(reads.some((x) => x.ok && x.data!.length > 0)).toBe(true);
    const failed = r.results.filter((x) => !x.ok);
    expect(failed.map((x) => x.error)).toEqual([22, 22]);
    expect(failed.every((x) => x.message.length > 0)).toBe(true);
    const bs = r.results.find((x) => x.command === Command.BLOCK_STATUS)!;
    expect(bs.extents!.size).toBe(2);
  });

  test("nbdkit-ooo-sr: replies in reverse order all complete", () => {
    if (!names.includes("nbdkit-ooo-sr")) return;
    const r = replay("nbdkit-ooo-sr");
    expect(r.results.map((x) => x.cookie)).toEqual([6n, 5n, 4n, 3n, 2n, 1n]);
    expect(r.results.every((x) => x.ok)).toBe(true);
  });

  test("nbdkit-tls-required-plaintext: option errors, then ABORT closes", () => {
    if (!names.includes("nbdkit-tls-required-plaintext")) return;
    const r = replay("nbdkit-tls-required-plaintext");
    expect(r.options.map((o) => o.ok)).toEqual([false, false, false, true]);
    expect(r.phase).toBe("closed");
  });
});
