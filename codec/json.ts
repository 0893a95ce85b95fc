/**
 * Frames and events as plain JSON, losslessly, and back: the form the golden vectors use for `frame`.
 *
 * {@link toJson} turns anything the codec returns (a frame, a decode result, a stream or conversation event,
 * a finding, an `NbdDecodeError`, a negotiated state) into values `JSON.stringify` takes as they are:
 * 64-bit values (`bigint`) become decimal strings, bytes (`Uint8Array`) lowercase hex, block-status
 * descriptors `{ contextId, count, extended, extents: [{ length, status }] }`, a `Map` an object, and
 * `undefined` properties are left out. Field names stay the codec's own (`command: 1`), unlike
 * `formatEventJson`, which prints the dissector's JSON Lines (spec names, `"NBD_CMD_WRITE"`) and leaves
 * data bytes out. {@link frameFromJson} reverses `toJson` for frames, so a frame read from a vector file
 * can be given to the encoders.
 *
 * @module
 */
import { isNbdDecodeError } from "./errors.ts";
import type { Frame } from "./events.ts";
import type { JsonValue } from "./format.ts";
import { type BlockStatusDescriptors, blockStatusExtents, createBlockStatusDescriptors } from "./reply.ts";

/**
 * Keys whose values are 64-bit integers: `bigint` in frames, decimal strings in JSON (vectors/README.md).
 *
 * @example
 * ```ts
 * import { JSON_BIGINT_KEYS } from "@nbd/codec";
 * console.log(JSON_BIGINT_KEYS.has("cookie")); // true
 * ```
 */
export const JSON_BIGINT_KEYS: ReadonlySet<string> = new Set([
  "size",
  "offset",
  "cookie",
  "length",
  "status",
  "effectLength",
  "depth",
]);

/**
 * Keys whose string values are bytes: `Uint8Array` in frames, lowercase hex in JSON.
 *
 * @example
 * ```ts
 * import { JSON_BYTES_KEYS } from "@nbd/codec";
 * console.log([...JSON_BYTES_KEYS]); // [ "data", "raw", "payload" ]
 * ```
 */
export const JSON_BYTES_KEYS: ReadonlySet<string> = new Set(["data", "raw", "payload"]);

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * Bytes as lowercase hex.
 *
 * @example
 * ```ts
 * import { bytesToHex } from "@nbd/codec";
 * console.log(bytesToHex(new Uint8Array([0x25, 0x60, 0x95, 0x13]))); // "25609513"
 * ```
 */
export function bytesToHex(bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("Cannot convert to hex: expected a Uint8Array");
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]!];
  return s;
}

/**
 * Hex (upper or lower case, an even number of digits, nothing else) as bytes. Throws `TypeError` otherwise.
 *
 * @example
 * ```ts
 * import { hexToBytes } from "@nbd/codec";
 * console.log(hexToBytes("0003")); // Uint8Array(2) [ 0, 3 ]
 * ```
 */
export function hexToBytes(hex: string): Uint8Array {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new TypeError(`Cannot convert from hex: "${String(hex).slice(0, 40)}" is not pairs of hex digits`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function isDescriptors(v: object): v is BlockStatusDescriptors {
  const d = v as Partial<BlockStatusDescriptors>;
  return typeof d.lengthAt === "function" && typeof d.statusAt === "function" && typeof d.count === "number";
}

/**
 * Any value the codec returns as plain JSON, with nothing lost: `bigint` → decimal string, `Uint8Array` →
 * lowercase hex, block-status descriptors → `{ contextId, count, extended, extents: [{ length, status }] }`,
 * `Map` → object (keys as strings), an `NbdDecodeError` → `{ code, offset, rule, message }`; `undefined`
 * properties and functions are left out. Frames come out exactly as the vectors' `frame` values.
 *
 * @example
 * ```ts
 * import { decodeRequest, hexToBytes, toJson } from "@nbd/codec";
 * const r = decodeRequest(hexToBytes(
 *   "25609513" + "0001" + "0001" + "ffffffffffffffff" + "0000000000001000" + "00000002" + "abcd",
 * ));
 * console.log(JSON.stringify(toJson(r)));
 * // {"done":true,"frame":{"type":"request","extended":false,"flags":1,"command":1,
 * //  "cookie":"18446744073709551615","offset":"4096","length":"2","data":"abcd"},"byteLength":30,"findings":[]}
 * ```
 */
export function toJson(value: unknown): JsonValue {
  if (value === null) return null;
  switch (typeof value) {
    case "bigint":
      return value.toString();
    case "string":
    case "boolean":
      return value;
    case "number":
      return Number.isFinite(value) ? value : null;
    case "object":
      break;
    default:
      return null;
  }
  const v = value as object;
  if (v instanceof Uint8Array) return bytesToHex(v);
  if (Array.isArray(v)) return v.map((x) => (x === undefined || typeof x === "function" ? null : toJson(x)));
  if (isDescriptors(v)) {
    return {
      contextId: v.contextId,
      count: v.count,
      extended: v.extended,
      extents: blockStatusExtents(v).map((e) => ({
        length: e.length.toString(),
        status: e.status.toString(),
      })),
    };
  }
  if (v instanceof Map) {
    const out: { [key: string]: JsonValue } = {};
    for (const [k, x] of v) if (x !== undefined) out[String(k)] = toJson(x);
    return out;
  }
  if (isNbdDecodeError(v)) return { code: v.code, offset: v.offset, rule: v.rule, message: v.message };
  const out: { [key: string]: JsonValue } = {};
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined || typeof x === "function") continue;
    out[k] = toJson(x);
  }
  return out;
}

function fromJsonValue(v: unknown, key: string): unknown {
  if (typeof v === "string" && JSON_BIGINT_KEYS.has(key)) {
    if (!/^(0|[1-9][0-9]*)$/.test(v)) {
      throw new TypeError(`Cannot read frame: ${key} "${v}" is not a decimal integer`);
    }
    return BigInt(v);
  }
  if (typeof v === "string" && JSON_BYTES_KEYS.has(key)) return hexToBytes(v);
  if (Array.isArray(v)) return v.map((x) => fromJsonValue(x, key));
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (key === "descriptors" && Array.isArray(o.extents)) {
      return createBlockStatusDescriptors(
        o.contextId as number,
        o.extended === true,
        o.extents.map((e) => fromJsonValue(e, "") as { length: bigint; status: bigint }),
      );
    }
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) out[k] = fromJsonValue(x, k);
    return out;
  }
  return v;
}

/**
 * The frame that {@link toJson} (or a vector file's `frame`) describes: decimal strings under the 64-bit
 * keys ({@link JSON_BIGINT_KEYS}) become `bigint`, hex under the byte keys ({@link JSON_BYTES_KEYS})
 * `Uint8Array`, and `descriptors` with `extents` block-status descriptors. The shape is not checked beyond
 * that: the encoders check what they are given.
 *
 * @example
 * ```ts
 * import { encodeRequest, frameFromJson, type Request } from "@nbd/codec";
 * const frame = frameFromJson({
 *   type: "request", extended: false, flags: 0, command: 0, cookie: "1", offset: "4096", length: "512",
 * }) as Request;
 * console.log(frame.offset, encodeRequest(frame).length); // 4096n 28
 * ```
 */
export function frameFromJson(json: JsonValue): Frame {
  if (json === null || typeof json !== "object" || Array.isArray(json) || typeof json.type !== "string") {
    throw new TypeError("Cannot read frame: expected an object with a string `type`");
  }
  return fromJsonValue(json, "") as Frame;
}
