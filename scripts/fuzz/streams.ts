// Fuzz targets of the two stream decoders and the conversation decoder: the same bytes decoded whole, in
// random splits (with and without payload views) and byte by byte must give identical events; lenient
// mode never throws; strict mode throws the same error whatever the split; a truncated stream keeps every
// earlier frame; every frame without findings encodes back to its bytes.
import {
  ClientStreamDecoder,
  ConversationDecoder,
  type ConversationEvent,
  decodeConversation,
  type Direction,
  formatEventJsonLine,
  formatEventText,
  type NegotiatedState,
  ServerStreamDecoder,
  type StreamEvent,
  type StreamOptions,
} from "../../mod.ts";
import {
  compareEvents,
  deferKnown,
  errorKey,
  firstDifference,
  guard,
  inputSeed,
  normalEvent,
  type Outcome,
  sameError,
  showError,
  Violation,
} from "./check.ts";
import { checkRoundTrip } from "./frames.ts";
import { Rng } from "./mutate.ts";

/** What the configuration byte's low 3 bits tell the decoders about the connection. */
export const STATE_PRESETS: readonly Partial<NegotiatedState>[] = [
  {},
  { phase: "transmission", style: "newstyle" },
  { phase: "transmission", style: "newstyle", structuredReplies: true },
  { phase: "transmission", style: "newstyle", structuredReplies: true, extendedHeaders: true },
  { phase: "options", style: "newstyle" },
  {
    phase: "transmission",
    style: "newstyle",
    structuredReplies: true,
    contexts: new Map([[1, "base:allocation"], [2, "qemu:dirty-bitmap:b"]]),
  },
  { style: "oldstyle" },
  { phase: "options", style: "newstyle", handshakeFlags: 3, clientFlags: 3 },
];

/** Stream options of a configuration byte: bits 0-2 a state preset, bit 3 small limits. */
export function streamOptions(cfg: number, extra: StreamOptions = {}): StreamOptions {
  const state = STATE_PRESETS[cfg & 7]!;
  const small = (cfg & 8) !== 0 ? { maxPayloadLength: 64, maxStringLength: 8, maxBufferedBytes: 256 } : {};
  return { ...small, ...extra, state };
}

/** Random chunk sizes: mostly small, sometimes large, sometimes empty. */
export function split(rng: Rng, b: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const max = rng.pick([1, 3, 7, 16, 64, 512, 4096]);
  for (let at = 0; at < b.length;) {
    if (rng.oneIn(16)) out.push(b.subarray(at, at));
    const n = 1 + rng.below(max);
    out.push(b.subarray(at, at + n));
    at += n;
  }
  return out;
}

function byteByByte(b: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const step = b.length <= 8192 ? 1 : 3;
  for (let at = 0; at < b.length; at += step) out.push(b.subarray(at, at + step));
  return out;
}

type Dec = ClientStreamDecoder | ServerStreamDecoder;

function runStream(make: () => Dec, chunks: readonly Uint8Array[]): StreamEvent[] {
  const d = make();
  const out: StreamEvent[] = [];
  for (const c of chunks) for (const e of d.push(c)) out.push(e);
  for (const e of d.end()) out.push(e);
  return out;
}

function frameAt(b: Uint8Array, e: StreamEvent): Uint8Array {
  return e.event === "frame" ? b.subarray(e.frameOffset, e.frameOffset + e.frameLength) : b.subarray(0, 0);
}

function noteEvents(features: Set<string>, prefix: string, events: readonly StreamEvent[]): void {
  for (const e of events) {
    if (e.event === "notice") features.add(`${prefix}:notice:${e.notice}`);
    else {
      const f = e.frame as unknown as Record<string, unknown>;
      const kind = (f.data as { kind?: string } | undefined)?.kind ??
        (f.payload as { kind?: string } | undefined)?.kind;
      features.add(
        `${prefix}:${e.frame.type}:${bucket(f.command ?? f.option ?? f.reply ?? f.chunkType)}:${kind}`,
      );
    }
    for (const x of e.findings) features.add(`${prefix}:finding:${x.rule}`);
  }
}

/** Checks every offset of the events lies in the stream, and frames tile it in order. */
function checkLayout(label: string, n: number, events: readonly StreamEvent[]): void {
  let at = 0;
  for (const e of events) {
    const off = e.event === "frame" ? e.frameOffset : e.streamOffset;
    const len = e.event === "frame" ? e.frameLength : e.length;
    if (!(off >= at && len >= 0 && off + len <= n)) {
      throw new Violation(
        "event-layout",
        `${label}: event at ${off}+${len} (stream ${n} bytes, previous end ${at})`,
      );
    }
    if (e.event === "frame") at = off + len;
    for (const f of e.findings) {
      if (!(f.offset >= 0 && f.offset <= n)) {
        throw new Violation("finding-offset", `${label}: finding ${f.rule}@${f.offset} outside [0, ${n}]`);
      }
    }
  }
}

/** All checks of one stream decoder (client or server side) on one input (configuration byte + bytes). */
export function checkStreamDecoder(
  side: "client" | "server",
  input: Uint8Array,
  features: Set<string>,
): void {
  if (input.length === 0) return;
  const cfg = input[0]!;
  const b = input.subarray(1);
  const n = b.length;
  const rng = new Rng(inputSeed(input, side === "client" ? 1 : 2));
  const Ctor = side === "client" ? ClientStreamDecoder : ServerStreamDecoder;
  const make = (extra: StreamOptions = {}) => () => new Ctor(streamOptions(cfg, extra));
  const label = `${side}-stream`;

  const whole = guard(`${label} lenient whole`, n, n, () => runStream(make(), [b]));
  if (!whole.ok) {
    throw new Violation("lenient-threw", `${label}: lenient mode threw ${showError(errorKey(whole.error))}`);
  }
  const events = whole.value;
  noteEvents(features, side, events);
  checkLayout(label, n, events);
  const base = events.map(normalEvent);

  // Random split, with or without payload views; byte by byte, the other way.
  const views = rng.oneIn(2);
  const variants: [string, Uint8Array[], boolean][] = [
    [`random split (payloadViews ${views})`, split(rng, b), views],
    [`byte by byte (payloadViews ${!views})`, byteByByte(b), !views],
  ];
  for (const [how, chunks, pv] of variants) {
    const r = guard(`${label} lenient ${how}`, n, n, () => runStream(make({ payloadViews: pv }), chunks));
    if (!r.ok) throw new Violation("lenient-threw", `${label} ${how}: threw ${showError(errorKey(r.error))}`);
    compareEvents(
      "split-mismatch",
      `${label} ${how} differs from whole`,
      base,
      r.value.map(normalEvent),
      pv,
      () => runStream(make({ payloadViews: false }), chunks).map(normalEvent),
    );
  }

  // Strict mode: the same outcome whatever the split.
  const sw = guard(`${label} strict whole`, n, n, () => runStream(make({ strict: true }), [b]));
  const chunks = split(rng, b);
  const ss = guard(`${label} strict split`, n, n, () => runStream(make({ strict: true }), chunks));
  compareStrict(label, sw, ss, base);

  // Truncation: every frame that ended before the cut is still there, identical.
  if (n > 1) {
    const cut = 1 + rng.below(n - 1);
    const r = guard(`${label} truncated`, cut, cut, () => runStream(make(), split(rng, b.subarray(0, cut))));
    if (!r.ok) throw new Violation("lenient-threw", `${label} truncated at ${cut}: threw`);
    checkTruncation(label, cut, events, r.value);
  }

  // Frames without findings encode back to their bytes.
  for (const e of events) {
    if (e.event === "frame" && e.findings.length === 0) checkRoundTrip(label, e.frame, frameAt(b, e));
  }
}

function compareStrict(
  label: string,
  whole: Outcome<readonly StreamEvent[]>,
  other: Outcome<readonly StreamEvent[]>,
  lenient: readonly string[],
): void {
  if (whole.ok !== other.ok) {
    throw new Violation(
      "strict-split-mismatch",
      `${label}: strict ${whole.ok ? "accepts" : "throws " + showError(errorKey(whole.error))} whole, ${
        other.ok ? "accepts" : "throws " + showError(errorKey(other.error))
      } split`,
    );
  }
  if (!whole.ok && !other.ok && !sameError(errorKey(whole.error), errorKey(other.error))) {
    const a = errorKey(whole.error);
    const b = errorKey(other.error);
    const v = new Violation(
      a.code === b.code && a.rule === b.rule ? "strict-split-offset" : "strict-split-mismatch",
      `${label}: strict throws ${showError(a)} whole, ${showError(b)} split`,
    );
    if (v.check === "strict-split-offset") deferKnown(v);
    else throw v;
  }
  if (whole.ok) {
    const got = whole.value.map(normalEvent);
    if (got.join("\n") !== lenient.join("\n")) {
      throw new Violation(
        "strict-lenient",
        `${label}: strict accepts, with other events than lenient: ${firstDifference(lenient, got)}`,
      );
    }
  }
}

function checkTruncation(
  label: string,
  cut: number,
  full: readonly { event: string; frameOffset?: number; frameLength?: number; direction?: Direction }[],
  part: readonly { event: string; direction?: Direction }[],
  direction?: Direction,
): void {
  const keep = (e: { event: string; frameOffset?: number; frameLength?: number; direction?: Direction }) =>
    e.event === "frame" && (direction === undefined || e.direction === direction) &&
    e.frameOffset! + e.frameLength! <= cut;
  const want = full.filter(keep).map((e) => normalEvent(e as StreamEvent));
  const got = part.filter((e) =>
    e.event === "frame" && (direction === undefined || e.direction === direction)
  )
    .slice(0, want.length).map((e) => normalEvent(e as StreamEvent));
  if (want.join("\n") !== got.join("\n")) {
    throw new Violation(
      "truncation-lost-frame",
      `${label}: cut at ${cut}${
        direction ? " of " + direction : ""
      }, a frame before the cut changed or is gone: ${firstDifference(want, got)}`,
    );
  }
}

// ---- conversation ----------------------------------------------------------------------------------------

/** A conversation input: configuration byte, u32 length of the client bytes, client bytes, server bytes. */
export function packConversation(cfg: number, c2s: Uint8Array, s2c: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + c2s.length + s2c.length);
  out[0] = cfg;
  new DataView(out.buffer).setUint32(1, c2s.length);
  out.set(c2s, 5);
  out.set(s2c, 5 + c2s.length);
  return out;
}

export function unpackConversation(input: Uint8Array): { cfg: number; c2s: Uint8Array; s2c: Uint8Array } {
  const cfg = input[0] ?? 0;
  const rest = input.subarray(Math.min(5, input.length));
  const len = input.length >= 5
    ? ((input[1]! << 24) | (input[2]! << 16) | (input[3]! << 8) | input[4]!) >>> 0
    : 0;
  const c = Math.min(len, rest.length);
  return { cfg, c2s: rest.subarray(0, c), s2c: rest.subarray(c) };
}

function byDirection(events: readonly ConversationEvent[]): { c2s: string[]; s2c: string[] } {
  const out = { c2s: [] as string[], s2c: [] as string[] };
  for (const e of events) out[e.direction].push(normalEvent(e));
  return out;
}

/**
 * The order a capture shows the bytes in, as the whole decoding found it: each event's bytes come before
 * the next event's bytes of the other direction (a reply after its request, a request after the option
 * reply that made it possible); bytes after the last event of a direction come at the end.
 */
function causalSchedule(
  events: readonly ConversationEvent[],
  c2s: Uint8Array,
  s2c: Uint8Array,
): { dir: Direction; bytes: Uint8Array }[] {
  const at = { c2s: 0, s2c: 0 };
  const out: { dir: Direction; bytes: Uint8Array }[] = [];
  const take = (dir: Direction, end: number) => {
    const src = dir === "c2s" ? c2s : s2c;
    const e = Math.min(end, src.length);
    if (e <= at[dir]) return;
    const last = out[out.length - 1];
    const bytes = src.subarray(at[dir], e);
    if (last !== undefined && last.dir === dir) last.bytes = src.subarray(at[dir] - last.bytes.length, e);
    else out.push({ dir, bytes });
    at[dir] = e;
  };
  for (const e of events) {
    // A `tls` or `undecodable` notice has length 0 but ends its direction: the decoder looked at the bytes
    // after it (an undecodable header, say) before anything that follows on the other side, and skips them
    // all. So all of them come now, as a capture would show them when the decoder got to see them.
    const end = e.event === "frame"
      ? e.frameOffset + e.frameLength
      : e.notice === "truncated"
      ? e.streamOffset + e.length
      : Infinity;
    take(e.direction, end);
  }
  take("s2c", s2c.length);
  take("c2s", c2s.length);
  return out;
}

/** Pushes a schedule, each segment in chunks cut by `cut`. */
function pushSchedule(
  options: StreamOptions,
  schedule: readonly { dir: Direction; bytes: Uint8Array }[],
  cut: (b: Uint8Array) => Uint8Array[],
): ConversationEvent[] {
  const d = new ConversationDecoder(options);
  const out: ConversationEvent[] = [];
  for (const s of schedule) for (const c of cut(s.bytes)) for (const e of d.push(s.dir, c)) out.push(e);
  for (const e of d.end()) out.push(e);
  return out;
}

/**
 * All checks of the conversation decoder on one input. The whole decoding ({@link decodeConversation},
 * which follows causality) is the reference; the same bytes pushed in that causal order (as a capture has
 * them), in random splits and byte by byte, must give each direction the same events.
 */
/** The event without a `buffer-limit-one-sided` finding (the event itself when it has none). */
function withoutWaitFinding(e: ConversationEvent): ConversationEvent {
  if (!e.findings.some((f) => f.rule === "buffer-limit-one-sided")) return e;
  return { ...e, findings: e.findings.filter((f) => f.rule !== "buffer-limit-one-sided") };
}

export function checkConversation(input: Uint8Array, features: Set<string>): void {
  const { cfg, c2s, s2c } = unpackConversation(input);
  const n = c2s.length + s2c.length;
  const lim = Math.max(c2s.length, s2c.length);
  const rng = new Rng(inputSeed(input, 3));
  const opts = streamOptions(cfg);
  const whole = guard("conversation whole", n, lim, () => decodeConversation(c2s, s2c, opts));
  if (!whole.ok) {
    throw new Violation(
      "lenient-threw",
      `conversation: lenient decodeConversation threw ${showError(errorKey(whole.error))}`,
    );
  }
  const events = whole.value;
  noteEvents(features, "conv", events);
  for (const dir of ["c2s", "s2c"] as const) {
    checkLayout(
      `conversation ${dir}`,
      dir === "c2s" ? c2s.length : s2c.length,
      events.filter((e) => e.direction === dir),
    );
  }
  const base = byDirection(events);
  // The formatters the dissector uses take every event the decoder makes.
  for (const e of events) {
    try {
      formatEventText(e);
      JSON.parse(formatEventJsonLine(e));
    } catch (err) {
      throw new Violation(
        "format-threw",
        `formatting a ${e.event === "frame" ? e.frame.type : e.notice} event: ${(err as Error).message}`,
      );
    }
  }

  const views = rng.oneIn(2);
  const schedule = causalSchedule(events, c2s, s2c);
  const variants: [string, (b: Uint8Array) => Uint8Array[], boolean][] = [
    [`pushed in causal order, random split (payloadViews ${views})`, (b) => split(rng, b), views],
    [`pushed in causal order, byte by byte (payloadViews ${!views})`, byteByByte, !views],
  ];
  for (const [how, cut, pv] of variants) {
    const chunks = schedule.map((s) => ({ dir: s.dir, chunks: cut(s.bytes) }));
    const replay = (payloadViews: boolean) => {
      const d = new ConversationDecoder({ ...opts, payloadViews });
      const out: ConversationEvent[] = [];
      for (const s of chunks) for (const c of s.chunks) for (const e of d.push(s.dir, c)) out.push(e);
      for (const e of d.end()) out.push(e);
      return out;
    };
    const r = guard(`conversation ${how}`, n, lim, () => replay(pv));
    if (!r.ok) {
      throw new Violation("lenient-threw", `conversation ${how}: threw ${showError(errorKey(r.error))}`);
    }
    // `buffer-limit-one-sided` says that a pushed side waited for the other beyond maxBufferedBytes: whole
    // decoding never waits, so that finding (and only it) is left out of this comparison; the split checks
    // between pushes (stream targets, strict below) still see it.
    const got = byDirection(r.value.map(withoutWaitFinding));
    for (const dir of ["c2s", "s2c"] as const) {
      compareEvents(
        "conversation-mismatch",
        `conversation ${how}, ${dir} differs from decodeConversation`,
        base[dir],
        got[dir],
        pv,
        () => byDirection(replay(false))[dir],
      );
    }
  }

  // Strict: the same outcome whole and pushed.
  const sw = guard(
    "conversation strict whole",
    n,
    lim,
    () => decodeConversation(c2s, s2c, { ...opts, strict: true }),
  );
  const ss = guard(
    "conversation strict pushed",
    n,
    lim,
    () => pushSchedule({ ...opts, strict: true }, schedule, (b) => split(rng, b)),
  );
  if (sw.ok !== ss.ok) {
    throw new Violation(
      "strict-split-mismatch",
      `conversation: strict ${sw.ok ? "accepts" : "throws " + showError(errorKey(sw.error))} whole, ${
        ss.ok ? "accepts" : "throws " + showError(errorKey(ss.error))
      } pushed`,
    );
  }
  if (sw.ok && events.every((e) => e.findings.length === 0)) {
    const got = byDirection(sw.value);
    for (const dir of ["c2s", "s2c"] as const) {
      if (got[dir].join("\n") !== base[dir].join("\n")) {
        throw new Violation(
          "strict-lenient",
          `conversation: strict accepts, with other ${dir} events than lenient: ${
            firstDifference(base[dir], got[dir])
          }`,
        );
      }
    }
  }
  if (!sw.ok && events.every((e) => e.findings.length === 0)) {
    throw new Violation(
      "strict-lenient",
      `conversation: lenient reports nothing, strict throws ${showError(errorKey(sw.error))}`,
    );
  }
  if (!sw.ok && !ss.ok && !sameError(errorKey(sw.error), errorKey(ss.error))) {
    const x = errorKey(sw.error);
    const y = errorKey(ss.error);
    // Which direction an error is in is not part of it, so two errors of both sides may legitimately race;
    // only a difference of offset for the same code and rule is certain to be the split's doing.
    if (x.code === y.code && x.rule === y.rule) {
      deferKnown(
        new Violation(
          "strict-split-offset",
          `conversation: strict throws ${showError(x)} whole, ${showError(y)} pushed`,
        ),
      );
    }
  }

  // Truncation of one direction keeps that direction's earlier frames.
  const dir: Direction = rng.oneIn(2) ? "c2s" : "s2c";
  const bytes = dir === "c2s" ? c2s : s2c;
  if (bytes.length > 1) {
    const cut = 1 + rng.below(bytes.length - 1);
    const a = dir === "c2s" ? c2s.subarray(0, cut) : c2s;
    const b = dir === "s2c" ? s2c.subarray(0, cut) : s2c;
    const r = guard("conversation truncated", cut, lim, () => decodeConversation(a, b, opts));
    if (!r.ok) throw new Violation("lenient-threw", `conversation truncated: threw`);
    checkTruncation("conversation", cut, events, r.value, dir);
  }

  for (const e of events) {
    if (e.event === "frame" && e.findings.length === 0) {
      checkRoundTrip("conversation", e.frame, frameAt(e.direction === "c2s" ? c2s : s2c, e));
    }
  }
}

/** A code as a feature: small codes as themselves, others in two buckets (unknown codes are endless). */
function bucket(code: unknown): string {
  if (typeof code !== "number") return "";
  return code < 32 ? String(code) : code >= 0x80000000 ? (code < 0x80000010 ? `e${code & 15}` : "E") : "H";
}
