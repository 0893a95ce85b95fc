// The checks every target shares: what may escape a decoder, how long a decode may take, and a normal form
// of events so that two decodings of the same bytes can be compared field by field.
import process from "node:process";
import { isNbdDecodeError, type NbdDecodeError } from "../../mod.ts";

/** A check failed: the fuzzer found something. `check` is a stable id (see docs/fuzzing.md). */
export class Violation extends Error {
  readonly check: string;
  /** A known defect, recorded while the input's other checks went on (see {@link deferKnown}). */
  deferred = false;
  constructor(check: string, message: string) {
    super(message);
    this.name = "Violation";
    this.check = check;
  }
}

/** Inputs below this size must decode within {@link SLOW_MS}. */
export const SLOW_INPUT_BYTES: number = 64 * 1024;
/** The time limit of one decode of an input under {@link SLOW_INPUT_BYTES}. */
export const SLOW_MS: number = 1000;

/** The comparable fields of an NbdDecodeError. */
export interface ErrorKey {
  readonly code: string;
  readonly offset: number;
  readonly rule: string;
}

export type Outcome<T> = { readonly ok: true; readonly value: T } | {
  readonly ok: false;
  readonly error: NbdDecodeError;
};

/** The process's CPU time (user and system) when the current input started, in microseconds. */
let inputCpu = 0;

/** The first known defect the current input showed, held while the other checks go on. */
let deferred: Violation | undefined;

/** Marks the start of an input: the time limit counts the CPU time spent since. */
export function startInput(): void {
  const c = process.cpuUsage();
  inputCpu = c.user + c.system;
  deferred = undefined;
}

/**
 * Records a violation that is one of the known defects (scripts/fuzz/known.ts) and lets the input's other
 * checks go on, so that a known defect does not hide a new one behind it. The engine reports it after the
 * input's checks, unless a check found something else.
 */
export function deferKnown(v: Violation): void {
  v.deferred = true;
  deferred ??= v;
}

/** The deferred known violation of the current input, if any (and forgets it). */
export function takeDeferred(): Violation | undefined {
  const v = deferred;
  deferred = undefined;
  return v;
}

/**
 * CPU time since {@link startInput}, in milliseconds. The limit is on CPU time, not wall time: the campaign
 * runs at the lowest priority on a shared machine, where a decode may wait seconds for a core.
 */
export function inputCpuMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system - inputCpu) / 1000;
}

/**
 * Runs one decode: only an NbdDecodeError may escape, with an integer offset in [0, limit]; an input under
 * 64 KiB must not take more than a second (of CPU time, for the whole input so far).
 */
export function guard<T>(label: string, inputLength: number, limit: number, fn: () => T): Outcome<T> {
  const t0 = performance.now();
  let out: Outcome<T>;
  try {
    out = { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof Violation) throw e;
    if (!isNbdDecodeError(e)) {
      const err = e as Error;
      throw new Violation(
        "foreign-exception",
        `${label}: ${err?.name ?? typeof e}: ${err?.message ?? String(e)}\n${
          err?.stack?.split("\n").slice(1, 4).join("\n") ?? ""
        }`,
      );
    }
    if (!Number.isInteger(e.offset) || e.offset < 0 || e.offset > limit) {
      throw new Violation(
        "error-offset",
        `${label}: ${e.code} ${e.rule} at offset ${e.offset}, outside [0, ${limit}]`,
      );
    }
    out = { ok: false, error: e };
  }
  const ms = performance.now() - t0;
  if (ms > SLOW_MS && inputLength < SLOW_INPUT_BYTES) {
    const cpu = inputCpuMs();
    if (cpu > SLOW_MS) {
      throw new Violation(
        "slow",
        `${label}: ${Math.round(ms)} ms (${Math.round(cpu)} ms of CPU) for ${inputLength} bytes`,
      );
    }
  }
  return out;
}

export function errorKey(e: NbdDecodeError): ErrorKey {
  return { code: e.code, offset: e.offset, rule: e.rule };
}

export function sameError(a: ErrorKey, b: ErrorKey): boolean {
  return a.code === b.code && a.offset === b.offset && a.rule === b.rule;
}

export function showError(e: ErrorKey): string {
  return `${e.code}/${e.rule}@${e.offset}`;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function hex(b: Uint8Array, max: number = Infinity): string {
  const n = Math.min(b.length, max);
  let s = "";
  for (let i = 0; i < n; i++) s += HEX[b[i]!];
  return n < b.length ? `${s}...(${b.length} bytes)` : s;
}

export function fromHex(h: string): Uint8Array {
  const out = new Uint8Array(h.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(2 * i, 2), 16);
  return out;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  n = 0;
  for (const p of parts) {
    out.set(p, n);
    n += p.length;
  }
  return out;
}

/**
 * A plain, key-sorted form of any decoded value: bytes as hex, bigints tagged, lazy block-status
 * descriptors expanded, functions dropped. Two decodings are equal when their normal forms are.
 */
export function normal(v: unknown, depth = 0): unknown {
  if (depth > 12) return "<deep>";
  if (v instanceof Uint8Array) return "x" + hex(v);
  if (typeof v === "bigint") return "n" + v.toString();
  if (Array.isArray(v)) return v.map((x) => normal(x, depth + 1));
  if (v instanceof Map) return [...v.entries()].map(([k, x]) => [normal(k), normal(x, depth + 1)]);
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(o).sort()) {
      const x = o[k];
      if (typeof x === "function" || x === undefined) continue;
      out[k] = normal(x, depth + 1);
    }
    if (typeof o.lengthAt === "function" && typeof o.count === "number") {
      const d = o as unknown as { count: number; lengthAt(i: number): bigint; statusAt(i: number): bigint };
      const n = Math.min(d.count, 4096);
      const list: string[] = [];
      for (let i = 0; i < n; i++) list.push(`${d.lengthAt(i)}:${d.statusAt(i)}`);
      out.descriptors = list;
    }
    return out;
  }
  return v;
}

interface EventLike {
  readonly event: string;
  readonly frame?: { readonly type: string; data?: unknown; payload?: unknown };
  readonly payload?: readonly Uint8Array[];
}

/**
 * The normal form of a stream or conversation event, with a payload given as views (payloadViews) put
 * back in the frame's data, so that decodings with and without views compare equal.
 */
export function normalEvent(e: EventLike): string {
  let x: unknown = e;
  const link = (e as { request?: Record<string, unknown> }).request;
  if (link !== undefined && link.data instanceof Uint8Array) {
    // The request a reply answers is given as decoded: with payloadViews its WRITE data is in the request's
    // own event, not in the frame, by design. The link is compared without its data.
    const { data: _d, ...request } = link;
    x = { ...e, request };
  }
  if (e.event === "frame" && e.payload !== undefined) {
    const data = concatBytes(e.payload);
    const f = e.frame as Record<string, unknown>;
    const frame = f.type === "reply-chunk"
      ? { ...f, payload: { ...(f.payload as Record<string, unknown>), data } }
      : { ...f, data };
    const { payload: _p, ...rest } = x as Record<string, unknown>;
    x = { ...rest, frame };
  }
  return JSON.stringify(normal(x));
}

/** The first place two event lists differ, for a finding's message. */
export function firstDifference(a: readonly string[], b: readonly string[]): string {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) {
      return `event ${i} of ${a.length}/${b.length}:\n  A ${clip(a[i])}\n  B ${clip(b[i])}`;
    }
  }
  return "equal";
}

function clip(s: string | undefined): string {
  if (s === undefined) return "(none)";
  return s.length > 600 ? s.slice(0, 600) + "..." : s;
}

/** A deterministic seed from the input bytes, so a check's random splits are the same on every replay. */
export function inputSeed(b: Uint8Array, salt: number): number {
  let h = (0x811c9dc5 ^ salt) >>> 0;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  return (h ^ b.length) >>> 0;
}

/**
 * What kind of difference the first differing events of two normal-form lists show, for the finding's
 * check id: `notice-length` (two notices equal but for their length), `tls` (a `tls` notice against a
 * `truncated` one, or a `tls` notice missing), or undefined.
 */
export function classifyDifference(a: readonly string[], b: readonly string[]): string | undefined {
  const i = a.findIndex((x, j) => x !== b[j]);
  const at = i < 0 ? Math.min(a.length, b.length) : i;
  const parse = (
    s: string | undefined,
  ) => (s === undefined ? undefined : JSON.parse(s) as Record<string, unknown>);
  const x = parse(a[at]);
  const y = parse(b[at]);
  if (x?.event === "notice" && y?.event === "notice") {
    const { length: _a, findings: _f, ...rx } = x;
    const { length: _b, findings: _g, ...ry } = y;
    if (JSON.stringify(rx) === JSON.stringify(ry) && x.length !== y.length) return "notice-length";
    const kinds = new Set([x.notice, y.notice]);
    if (kinds.has("tls") && kinds.has("truncated")) return "tls";
  }
  if ((x?.notice === "tls" && y === undefined) || (y?.notice === "tls" && x === undefined)) return "tls";
  return undefined;
}

/** Structural equality of decoded values (what {@link normal} would make equal), without building strings. */
export function deepEqual(a: unknown, b: unknown, depth = 0): boolean {
  if (a === b) return true;
  if (depth > 12) return true;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a instanceof Map || b instanceof Map) return JSON.stringify(normal(a)) === JSON.stringify(normal(b));
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const kx = Object.keys(x).filter((k) => x[k] !== undefined && typeof x[k] !== "function");
  const ky = Object.keys(y).filter((k) => y[k] !== undefined && typeof y[k] !== "function");
  if (kx.length !== ky.length) return false;
  for (const k of kx) if (!deepEqual(x[k], y[k], depth + 1)) return false;
  if (typeof x.lengthAt === "function" || typeof y.lengthAt === "function") {
    return JSON.stringify(normal(a)) === JSON.stringify(normal(b));
  }
  return true;
}

function strip(events: readonly string[], what: "notice-length" | "findings"): string[] {
  return events.map((s) => {
    const e = JSON.parse(s) as Record<string, unknown>;
    if (what === "notice-length" && e.event === "notice") delete e.length;
    if (what === "findings") delete e.findings;
    return JSON.stringify(e);
  });
}

function same(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Compares the events of a split decoding (`got`) with the reference (`base`). Differences that are known
 * defects of issue 15 section 1 are deferred ({@link deferKnown}) and the comparison goes on without them:
 * notice lengths (15.1.4), a tls notice against a truncated one (15.1.5), and findings that only payload
 * views change (15.1.2). Any other difference throws: `prefix-mismatch` (`split-mismatch` or
 * `conversation-mismatch`), or `split-mismatch-payload-views` when payload views alone change anything
 * but findings. `plain` decodes the same split without payload views (called only when needed).
 */
export function compareEvents(
  prefix: string,
  label: string,
  base: readonly string[],
  got: readonly string[],
  payloadViews: boolean,
  plain: () => readonly string[],
): void {
  if (same(base, got)) return;
  const message = `${label}: ${firstDifference(base, got)}`;
  const b1 = strip(base, "notice-length");
  const g1 = strip(got, "notice-length");
  if (same(b1, g1)) {
    deferKnown(new Violation(`${prefix}-notice-length`, message));
    return;
  }
  if (payloadViews) {
    const p1 = strip(plain(), "notice-length");
    if (same(p1, b1)) {
      // Payload views alone make the difference.
      if (same(strip(b1, "findings"), strip(g1, "findings"))) {
        deferKnown(new Violation("split-mismatch-payload-views-findings", message));
        return;
      }
      throw new Violation("split-mismatch-payload-views", message);
    }
  }
  if (classifyDifference(b1, g1) === "tls") {
    deferKnown(new Violation(`${prefix}-tls`, message));
    return;
  }
  throw new Violation(prefix, `${label}: ${firstDifference(b1, g1)}`);
}
