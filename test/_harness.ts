// Shared vector harness: every valid vector is checked both ways, at an offset, at every prefix and
// byte by byte; invalid vectors must throw NbdDecodeError with the given code and offset; acceptable
// vectors decode in lenient mode with the given findings and throw in strict mode.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";
import { type Decoded, isNbdDecodeError, JSON_BIGINT_KEYS, JSON_BYTES_KEYS } from "../mod.ts";

export const VECTOR_DIR: string = fileURLToPath(new URL("../vectors/", import.meta.url));

/** A vector as stored in vectors/*.json (see vectors/README.md). */
export interface Vector {
  id: string;
  name: string;
  comment?: string;
  flags: string[];
  decoder: string;
  context: Record<string, unknown>;
  /**
   * The frame's bytes, as {@link loadVectorFiles} returns them: the stored `hex` followed by `repeat.hex`,
   * `repeat.times` times (as stored, `hex` is only the part before the repetition).
   */
  hex: string;
  repeat?: { hex: string; times: number };
  frame?: unknown;
  findings?: { code: string; offset: number; rule: string }[];
  result: "valid" | "invalid" | "acceptable";
  code?: string;
  offset?: number;
  rule?: string;
  source: string;
}

export interface VectorFile {
  schema: string;
  family: string;
  description: string;
  vectors: Vector[];
}

/** How the harness drives one decoder name. `context` becomes decode options. */
export interface CodecUnderTest {
  decode(bytes: Uint8Array, options: Record<string, unknown>): Decoded<unknown>;
  /** Encodes the frame; for data-carrying frames, the header (the payload is appended by `payload`). */
  encode?(frame: never, context: Record<string, unknown>): Uint8Array;
  encodeInto?(frame: never, target: Uint8Array, offset: number, context: Record<string, unknown>): number;
  byteLength?(frame: never, context: Record<string, unknown>): number;
  /** Payload bytes sent after the encoded header (write data, chunk data), if the encoder leaves them out. */
  payload?(frame: never): Uint8Array | undefined;
}

/** Keys whose values are 64-bit integers (bigint in frames, decimal strings in JSON). */
export const BIGINT_KEYS: ReadonlySet<string> = JSON_BIGINT_KEYS;
/** Keys whose values are bytes (Uint8Array in frames, lowercase hex strings in JSON). */
export const BYTES_KEYS: ReadonlySet<string> = JSON_BYTES_KEYS;

export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || /[^0-9a-f]/.test(hex)) throw new Error(`bad hex: ${hex.slice(0, 40)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Frame → JSON form: bigint as decimal string, bytes as hex, functions and undefined dropped. */
export function toJson(v: unknown, key = ""): unknown {
  if (typeof v === "bigint") {
    if (!BIGINT_KEYS.has(key)) throw new Error(`bigint under key "${key}" which is not a BIGINT_KEY`);
    return v.toString();
  }
  if (v instanceof Uint8Array) {
    if (!BYTES_KEYS.has(key)) throw new Error(`bytes under key "${key}" which is not a BYTES_KEY`);
    return toHex(v);
  }
  if (typeof v === "number" && BIGINT_KEYS.has(key)) throw new Error(`number under bigint key "${key}"`);
  if (Array.isArray(v)) return v.map((x) => toJson(x, key));
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined || typeof x === "function") continue;
      out[k] = toJson(x, k);
    }
    return out;
  }
  return v;
}

/** JSON form → frame, by key (BIGINT_KEYS, BYTES_KEYS). */
export function fromJson(v: unknown, key = ""): unknown {
  if (typeof v === "string" && BIGINT_KEYS.has(key)) return BigInt(v);
  if (typeof v === "string" && BYTES_KEYS.has(key)) return fromHex(v);
  if (Array.isArray(v)) return v.map((x) => fromJson(x, key));
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = fromJson(x, k);
    return out;
  }
  return v;
}

/**
 * A list written as `{ "repeat": [items], "times": n }` in a vector's frame stands for the items repeated n
 * times (vectors/README.md, "Repetition"); everything else is returned as it is.
 */
function expandLists(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(expandLists);
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 2 && Array.isArray(o.repeat) && typeof o.times === "number") {
    const items = o.repeat.map(expandLists);
    return Array.from({ length: items.length * o.times }, (_, i) => items[i % items.length]);
  }
  return Object.fromEntries(keys.map((k) => [k, expandLists(o[k])]));
}

/** A stored vector with its repetitions written out: whole `hex`, plain lists in `frame`. */
function expandVector(v: Vector): Vector {
  if (v.repeat === undefined) return v;
  const { repeat, ...rest } = v;
  return { ...rest, hex: v.hex + repeat.hex.repeat(repeat.times), frame: expandLists(v.frame) };
}

/** Every vector file, with repeated bytes and lists expanded (see {@link Vector.hex}). */
export function loadVectorFiles(): VectorFile[] {
  return readdirSync(VECTOR_DIR)
    .filter((f) => f.endsWith(".json") && f !== "schema.json")
    .sort()
    .map((f) => JSON.parse(readFileSync(VECTOR_DIR + f, "utf8")) as VectorFile)
    .map((f) => ({ ...f, vectors: f.vectors.map(expandVector) }));
}

/**
 * Prefix lengths the harness tries: all of them for a frame of up to 4 KiB; for a larger one (a vector with
 * `repeat`), the first and last 256 and every 509th, so that a megabyte frame costs thousands of decodes,
 * not a million.
 */
function prefixLengths(length: number): number[] {
  if (length <= 4096) return Array.from({ length }, (_, n) => n);
  const out: number[] = [];
  for (let n = 0; n < length; n++) if (n < 256 || n >= length - 256 || n % 509 === 0) out.push(n);
  return out;
}

function expectDecodeError(fn: () => unknown, code: string, offset: number | undefined, rule?: string): void {
  let caught: unknown = undefined;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, "expected an NbdDecodeError").toBeDefined();
  if (!isNbdDecodeError(caught)) throw caught;
  expect(caught.code).toBe(code);
  if (offset !== undefined) expect(caught.offset).toBe(offset);
  if (rule !== undefined) expect(caught.rule).toBe(rule);
}

/** Registers vitest tests for every vector of `file` whose decoder is in `codecs`. */
export function testVectors(file: VectorFile, codecs: Record<string, CodecUnderTest>): void {
  for (const v of file.vectors) {
    const codec = codecs[v.decoder];
    if (codec === undefined) {
      throw new Error(`vector ${v.id}: no codec registered for decoder "${v.decoder}"`);
    }
    const bytes = fromHex(v.hex);
    const ctx = v.context;
    test(`${v.id}: ${v.name}`, () => {
      if (v.result === "invalid") {
        expectDecodeError(() => codec.decode(bytes, { ...ctx, strict: true }), v.code!, v.offset, v.rule);
        // In lenient mode the same input either still throws this error or is reported as a finding.
        let lenient: Decoded<unknown> | undefined;
        try {
          lenient = codec.decode(bytes, { ...ctx, strict: false });
        } catch (e) {
          if (!isNbdDecodeError(e)) throw e;
          expect(e.code).toBe(v.code);
        }
        if (lenient !== undefined) {
          expect(lenient.done).toBe(true);
          if (lenient.done) expect(lenient.findings.map((f) => f.code)).toContain(v.code);
        }
        return;
      }
      if (v.result === "acceptable") {
        const first = v.findings![0]!;
        expectDecodeError(
          () => codec.decode(bytes, { ...ctx, strict: true }),
          first.code,
          first.offset,
          first.rule,
        );
        const r = codec.decode(bytes, { ...ctx, strict: false });
        expect(r.done).toBe(true);
        if (!r.done) return;
        expect(toJson(r.frame)).toEqual(v.frame);
        expect(r.byteLength).toBe(bytes.length);
        expect(r.findings.map((f) => ({ code: f.code, offset: f.offset, rule: f.rule }))).toEqual(v.findings);
        return;
      }
      // valid
      const r = codec.decode(bytes, ctx);
      expect(r.done).toBe(true);
      if (!r.done) return;
      expect(toJson(r.frame)).toEqual(v.frame);
      expect(r.byteLength).toBe(bytes.length);
      expect(r.findings).toEqual([]);

      // at an offset inside a larger buffer, with bytes after it
      const big = new Uint8Array(bytes.length + 17).fill(0xa5);
      big.set(bytes, 10);
      const r2 = codec.decode(big, { ...ctx, offset: 10 });
      expect(r2.done && toJson(r2.frame)).toEqual(v.frame);
      expect(r2.done && r2.byteLength).toBe(bytes.length);

      // every strict prefix needs more bytes, and never more than are missing (a sample of them for a
      // frame above 4 KiB: see prefixLengths)
      for (const n of prefixLengths(bytes.length)) {
        const p = codec.decode(bytes.subarray(0, n), ctx);
        expect(p.done, `prefix of ${n} bytes`).toBe(false);
        if (!p.done) {
          expect(p.needed).toBeGreaterThan(0);
          expect(p.needed).toBeLessThanOrEqual(bytes.length - n);
        }
      }

      // byte by byte: grow the input one byte at a time (above 4 KiB: by what `needed` asks, which must
      // never lead past the end), each time in a fresh copy
      let have = 0;
      let result: Decoded<unknown> = { done: false, needed: 1 };
      while (!result.done) {
        have += bytes.length > 4096 ? result.needed : 1;
        expect(have).toBeLessThanOrEqual(bytes.length);
        result = codec.decode(bytes.slice(0, have), ctx);
      }
      expect(have).toBe(bytes.length);
      expect(toJson(result.frame)).toEqual(v.frame);

      if (codec.encode === undefined || v.flags.includes("non-canonical")) return;
      const frame = fromJson(v.frame) as never;
      const header = codec.encode(frame, ctx);
      const payload = codec.payload?.(frame);
      const encoded = payload === undefined ? header : Uint8Array.from([...header, ...payload]);
      expect(toHex(encoded)).toBe(v.hex);
      if (codec.byteLength !== undefined) expect(codec.byteLength(frame, ctx)).toBe(header.length);
      if (codec.encodeInto !== undefined) {
        const target = new Uint8Array(header.length + 20).fill(0x5a);
        const n = codec.encodeInto(frame, target, 10, ctx);
        expect(n).toBe(header.length);
        expect(toHex(target.subarray(10, 10 + n))).toBe(toHex(header));
        expect(target.subarray(0, 10).every((x) => x === 0x5a)).toBe(true);
        expect(target.subarray(10 + n).every((x) => x === 0x5a)).toBe(true);
      }
    });
  }
}

export function vectorFile(family: string): VectorFile {
  const f = loadVectorFiles().find((x) => x.family === family);
  if (f === undefined) throw new Error(`no vector file for family ${family}`);
  return f;
}
