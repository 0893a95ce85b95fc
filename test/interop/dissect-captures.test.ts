/**
 * Every interop conversation is dissected with our conversation decoder. This file runs after the other
 * interop files (the sequencer in vitest.config.ts puts it last): it reads every pcap they wrote to
 * `$NBD_INTEROP_DIR/captures/` (and the index of captures in `captures/index.jsonl`, written by
 * `startCapture`), reassembles each TCP connection with our trace code, and decodes both byte streams with
 * `decodeConversation` in lenient mode.
 *
 * A finding (of a frame, of a notice, or of the capture/TCP layer) passes only when it is on {@link ALLOWED}
 * below, which names the rule, the captures it may appear in, the peer or test that causes it and why. Every
 * other finding, every `undecodable` notice and every `truncated` notice not on the list fails, printing
 * the capture, the frame and the finding. A capture without a single NBD frame fails too (the capture did
 * not work), and so does a capture the index lists but that is missing (in CI, or whenever tcpdump ran).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { type ConversationEvent, decodeConversation, type Finding, formatEventText } from "../../mod.ts";
import { reassembleCapture, type TraceFinding } from "../../trace.ts";
import { CAPTURE_INDEX, type CaptureIndexEntry, IN_CI, interopDir } from "./_peers.ts";

// ---------------------------------------------------------------------------------------------------------
// The allowlist

/** Where a finding was seen, for matching it against {@link ALLOWED}. */
interface Seen {
  /** Capture name (file name without `.pcap`). */
  readonly capture: string;
  /** `frame`, `notice` (`truncated`, `undecodable`, `tls`) or `capture` (reassembly). */
  readonly where: "frame" | "notice" | "capture";
  readonly direction?: "c2s" | "s2c" | undefined;
  /** Frame kind (`request`, `option-request`, ...) or notice kind. */
  readonly kind?: string | undefined;
  /** For requests: the command number; for option requests: the option number. */
  readonly code?: number | undefined;
  /** The rule id (`notice:truncated` for a truncated notice without a finding of its own). */
  readonly rule: string;
}

/** One explained finding. */
interface Allowed {
  /**
   * The rule id of the finding (`Finding.rule`), or `notice:truncated` for a stream that ends inside a frame
   * (none is listed: no interop test has produced one in our runs, libnbd's close after NBD_OPT_ABORT
   * included, so one would be news).
   */
  readonly rule: string;
  /** Captures (names without `.pcap`) it may appear in. */
  readonly captures: RegExp;
  /** Narrower: direction, frame kind and command/option number it must have. */
  readonly direction?: "c2s" | "s2c";
  readonly kind?: string;
  readonly code?: number;
  /** Who sends the frame that causes it. */
  readonly peer: string;
  /** The test(s) making those captures. */
  readonly test: string;
  /** Why it is expected. */
  readonly reason: string;
  /**
   * `true`: it is deterministic, so it must appear in every listed capture that exists (an entry that no
   * longer matches anything is stale and fails, so the list cannot silently grow wider than the truth).
   */
  readonly always: boolean;
}

const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const NBD_CMD_TRIM = 4;
const NBD_CMD_BLOCK_STATUS = 7;
const NBD_OPT_LIST = 3;
const NBD_OPT_STRUCTURED_REPLY = 8;

const ALLOWED: readonly Allowed[] = [
  {
    rule: "write-payload-len",
    captures: /^(qemu-img-convert-(ext|node)|qemu-io-ext|raw-init-flags)$/,
    direction: "c2s",
    kind: "request",
    code: NBD_CMD_WRITE,
    peer: "qemu 10.0.2 client (qemu-img convert / qemu-io) against our server with extended headers",
    test:
      "our-server.test.ts: qemu-img convert (ext, Node), qemu-io writes (ext), NBD_INFO_INIT_FLAGS (qemu-io)",
    reason: "qemu 10's client sends extended NBD_CMD_WRITE without NBD_CMD_FLAG_PAYLOAD_LEN, which the " +
      "extension says it MUST set (shared/peers/README.md quirk 1); our server tolerates it",
    always: true,
  },
  {
    rule: "command-flags-reserved",
    captures: /^(errors-(extended|structured|simple)|raw-commands(-ro)?)$/,
    direction: "c2s",
    kind: "request",
    code: NBD_CMD_READ,
    peer: "our client (NbdClient.raw) / test/interop/raw_nbd.py",
    test:
      "our-client.test.ts: error replies (bad flags); our-server.test.ts: command errors (unknown command flag)",
    reason: "deliberately malformed: READ with command flag 0x8000 (an unassigned bit) to check that our " +
      "server answers NBD_EINVAL and stays in sync",
    always: true,
  },
  {
    rule: "command-flags",
    captures: /^errors-(extended|structured|simple)$/,
    direction: "c2s",
    kind: "request",
    code: NBD_CMD_TRIM,
    peer: "our client (NbdClient.raw)",
    test: "our-client.test.ts: error replies (bad flags)",
    reason:
      "deliberately malformed: TRIM with NBD_CMD_FLAG_REQ_ONE (valid only for BLOCK_STATUS), to check " +
      "that our server answers NBD_EINVAL",
    always: true,
  },
  {
    rule: "command-flag-unadvertised",
    captures: /^errors-simple$/,
    direction: "c2s",
    kind: "request",
    code: NBD_CMD_READ,
    peer: "our client (read with df, checkRequests off)",
    test: "our-client.test.ts: error replies (simple), READ with DF",
    reason: "deliberately malformed: READ with NBD_CMD_FLAG_DF, which our server does not advertise " +
      "without structured replies (NBD_FLAG_SEND_DF clear), to check that it answers NBD_EINVAL",
    always: true,
  },
  {
    rule: "block-status-payload-duplicate",
    captures: /^errors-extended$/,
    direction: "c2s",
    kind: "request",
    code: NBD_CMD_BLOCK_STATUS,
    peer: "our client (blockStatus with contextIds [1, 1])",
    test: "our-client.test.ts: error replies (extended), bad block-status payload",
    reason: "deliberately malformed: a block-status payload naming context 1 twice, which the server MUST " +
      "fail (our server answers NBD_EINVAL)",
    always: true,
  },
  {
    rule: "option-no-data",
    captures: /^raw-options$/,
    direction: "c2s",
    kind: "option-request",
    code: NBD_OPT_LIST,
    peer: "test/interop/raw_nbd.py",
    test: "our-server.test.ts: option errors (LIST with data)",
    reason: "deliberately malformed: NBD_OPT_LIST with one byte of data, to check NBD_REP_ERR_INVALID",
    always: true,
  },
  {
    rule: "option-no-data",
    captures: /^raw-options$/,
    direction: "c2s",
    kind: "option-request",
    code: NBD_OPT_STRUCTURED_REPLY,
    peer: "test/interop/raw_nbd.py",
    test: "our-server.test.ts: option errors (STRUCTURED_REPLY with data)",
    reason: "deliberately malformed: NBD_OPT_STRUCTURED_REPLY with one byte of data, to check " +
      "NBD_REP_ERR_INVALID",
    always: true,
  },
];

function allowedFor(s: Seen): Allowed | undefined {
  return ALLOWED.find((a) =>
    a.rule === s.rule && a.captures.test(s.capture) &&
    (a.direction === undefined || a.direction === s.direction) &&
    (a.kind === undefined || a.kind === s.kind) && (a.code === undefined || a.code === s.code)
  );
}

// ---------------------------------------------------------------------------------------------------------
// The captures

const capDir = join(interopDir(), "captures");
const index = new Map<string, CaptureIndexEntry>();
if (existsSync(join(capDir, CAPTURE_INDEX))) {
  for (const line of readFileSync(join(capDir, CAPTURE_INDEX), "utf8").split("\n")) {
    if (line.trim() === "") continue;
    const e = JSON.parse(line) as CaptureIndexEntry;
    index.set(e.name, e); // a later run into the same directory wins
  }
}
const pcaps = existsSync(capDir)
  ? readdirSync(capDir).filter((f) => f.endsWith(".pcap")).map((f) => f.slice(0, -5)).sort()
  : [];

interface Totals {
  captures: number;
  connections: number;
  frames: number;
  notices: Map<string, number>;
  /** rule -> capture -> count */
  findings: Map<string, Map<string, number>>;
  /** Allowlist entries used (by index in ALLOWED) -> captures. */
  used: Map<number, Set<string>>;
  /** Captures dissected so far. */
  dissected: Set<string>;
}
const totals: Totals = {
  captures: 0,
  connections: 0,
  frames: 0,
  notices: new Map(),
  findings: new Map(),
  used: new Map(),
  dissected: new Set(),
};

function count(s: Seen): void {
  let m = totals.findings.get(s.rule);
  if (m === undefined) totals.findings.set(s.rule, m = new Map());
  m.set(s.capture, (m.get(s.capture) ?? 0) + 1);
}

function frameCode(e: ConversationEvent): number | undefined {
  if (e.event !== "frame") return undefined;
  const f = e.frame as { type: string; command?: number; option?: number };
  if (f.type === "request") return f.command;
  if (f.type === "option-request") return f.option;
  return undefined;
}

function findingText(f: Finding | TraceFinding): string {
  return `${f.rule} (${f.code}, offset ${f.offset}): ${f.message}`;
}

/** Dissects one capture; returns the problems (empty: everything explained). */
function dissect(name: string): string[] {
  const path = join(capDir, `${name}.pcap`);
  const problems: string[] = [];
  const where = (what: string) => `${path}: ${what}`;
  const r = reassembleCapture(new Uint8Array(readFileSync(path)));
  totals.captures++;
  totals.dissected.add(name);
  totals.connections += r.connections.length;
  const check = (s: Seen, explain: () => string) => {
    count(s);
    const a = allowedFor(s);
    if (a === undefined) {
      problems.push(where(explain()));
      return;
    }
    const i = ALLOWED.indexOf(a);
    let used = totals.used.get(i);
    if (used === undefined) totals.used.set(i, used = new Set());
    used.add(name);
  };
  for (const f of r.findings) {
    check(
      { capture: name, where: "capture", direction: f.direction, rule: f.rule },
      () =>
        `capture/TCP finding${f.connection === undefined ? "" : ` (connection ${f.connection})`}` +
        `${f.packet === undefined ? "" : ` at packet ${f.packet}`}: ${findingText(f)}`,
    );
  }
  let frames = 0;
  r.streams.forEach((s, connection) => {
    const events = decodeConversation(s.c2s, s.s2c, { strict: false, connection });
    events.forEach((e, n) => {
      const text = () => formatEventText(e, n + 1).trimEnd();
      if (e.event === "frame") {
        frames++;
        for (const f of e.findings) {
          check(
            {
              capture: name,
              where: "frame",
              direction: e.direction,
              kind: e.frame.type,
              code: frameCode(e),
              rule: f.rule,
            },
            () => `finding ${findingText(f)}\n  in frame: ${text()}`,
          );
        }
        return;
      }
      totals.notices.set(e.notice, (totals.notices.get(e.notice) ?? 0) + 1);
      const seen = { capture: name, where: "notice" as const, direction: e.direction, kind: e.notice };
      if (e.notice === "undecodable") {
        count({ ...seen, rule: "notice:undecodable" });
        problems.push(where(
          `undecodable bytes (never allowed): ${text()}${
            e.findings.map((f) => `\n  finding ${findingText(f)}`).join("")
          }`,
        ));
        return;
      }
      if (e.notice === "truncated") {
        check({ ...seen, rule: "notice:truncated" }, () => `truncated stream: ${text()}`);
      }
      for (const f of e.findings) {
        check({ ...seen, rule: f.rule }, () => `finding ${findingText(f)}\n  in notice: ${text()}`);
      }
    });
  });
  totals.frames += frames;
  if (frames === 0) {
    problems.push(where(`no NBD frame in ${r.connections.length} connection(s): the capture did not work`));
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------
// The tests

describe("dissection of every interop capture", () => {
  const indexed = [...index.values()];
  const missing = indexed.filter((e) => e.skipped !== true && !pcaps.includes(e.name));
  const skipped = indexed.filter((e) => e.skipped === true);

  test("captures exist", () => {
    if (pcaps.length === 0) {
      const why =
        `no captures in ${capDir} (run \`npm run test:interop\`, which runs the interop tests first)`;
      if (IN_CI) throw new Error(why);
      console.log(`interop dissection SKIPPED: ${why}`);
      return;
    }
    if (skipped.length > 0) {
      console.log(`captures skipped for lack of tcpdump: ${skipped.map((e) => e.name).join(", ")}`);
      if (IN_CI) throw new Error("captures skipped in CI");
    }
    expect(
      missing.map((e) => `${e.name}.pcap (from ${e.test})`),
      "captures the tests started but did not write",
    )
      .toEqual([]);
  });

  for (const name of pcaps) {
    const made = index.get(name)?.test ?? "not in the index (an earlier run into the same directory?)";
    test(`${name}.pcap (${made})`, () => {
      const problems = dissect(name);
      if (problems.length > 0) {
        throw new Error(
          `${problems.length} unexplained finding(s) (see ALLOWED in this file):\n${problems.join("\n")}`,
        );
      }
    });
  }

  test("every deterministic allowlist entry still matches its captures", () => {
    const stale: string[] = [];
    ALLOWED.forEach((a, i) => {
      if (!a.always) return;
      const want = [...totals.dissected].filter((p) => a.captures.test(p));
      const got = totals.used.get(i) ?? new Set<string>();
      const lacking = want.filter((p) => !got.has(p));
      if (lacking.length > 0) stale.push(`${a.rule} (${a.peer}): not seen in ${lacking.join(", ")}`);
    });
    expect(stale, "allowlist entries marked `always` whose finding no longer appears").toEqual([]);
  });

  afterAll(() => {
    const lines = [
      `dissected ${totals.captures} captures, ${totals.connections} connections, ${totals.frames} NBD frames`,
    ];
    const notices = [...totals.notices].map(([k, v]) => `${k} ${v}`).join(", ");
    lines.push(`notices: ${notices === "" ? "none" : notices}`);
    if (totals.findings.size === 0) lines.push("findings: none");
    for (const [rule, per] of [...totals.findings].sort(([a], [b]) => a.localeCompare(b))) {
      const n = [...per.values()].reduce((x, y) => x + y, 0);
      const explained = ALLOWED.filter((a) => a.rule === rule).map((a) => a.reason);
      lines.push(
        `finding ${rule}: ${n} in ${[...per].map(([c, k]) => `${c} (${k})`).join(", ")}` +
          (explained.length > 0
            ? `\n  explained: ${[...new Set(explained)].join(" | ")}`
            : "\n  NOT EXPLAINED"),
      );
    }
    console.log(lines.join("\n"));
  });
});
