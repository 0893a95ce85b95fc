// Fuzz targets of the frame decoders, strict and lenient. An input is one configuration byte (which
// negotiated context the decoder is given) followed by the bytes to decode.
import {
  decodeClientFlags,
  type Decoded,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  decodeReply,
  decodeReplyChunk,
  decodeRequest,
  decodeSimpleReply,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeOptionRequest,
  encodeReplyChunk,
  encodeRequest,
  encodeSimpleReply,
  type Finding,
  type Frame,
} from "../../mod.ts";
import {
  concatBytes,
  deepEqual,
  errorKey,
  guard,
  hex,
  type Outcome,
  sameError,
  showError,
  Violation,
} from "./check.ts";

/** What decoding one frame may allocate outside the JS heap (typed arrays), at most. */
const FRAME_ALLOCATION_LIMIT = 16 << 20;

/** Options of NBD_OPT_* a reply may answer (index into it from the configuration byte). */
export const PENDING_OPTIONS: readonly (number | undefined)[] = [
  undefined,
  5, // STARTTLS
  7, // GO
  6, // INFO
  3, // LIST
  8, // STRUCTURED_REPLY
  9, // LIST_META_CONTEXT
  10, // SET_META_CONTEXT
  11, // EXTENDED_HEADERS
  2, // ABORT
  1, // EXPORT_NAME
  0x1234,
  4, // PEEK_EXPORT (withdrawn)
];
/** READ lengths a simple reply may answer. */
export const READ_LENGTHS: readonly (number | undefined)[] = [undefined, 0, 2, 8, 100, 512, 4096, 1];

/** The decode options of a configuration byte: bits 0-1 header style, 2-5 a table index, 7 small limits. */
export function frameOptions(cfg: number): {
  extendedHeaders: boolean | undefined;
  pendingOption: number | undefined;
  readLength: number | undefined;
  noZeroes: boolean;
  small: boolean;
} {
  const style = cfg & 3;
  const idx = (cfg >> 2) & 15;
  return {
    extendedHeaders: style === 1 ? false : style === 2 ? true : undefined,
    pendingOption: PENDING_OPTIONS[idx % PENDING_OPTIONS.length],
    readLength: READ_LENGTHS[idx % READ_LENGTHS.length],
    noZeroes: (cfg & 1) === 1,
    small: (cfg & 0x80) !== 0,
  };
}

/** The configuration byte that gives a vector's context (the inverse of {@link frameOptions}). */
export function configOf(context: Record<string, unknown>): number {
  let cfg = 0;
  if (context.extendedHeaders === false) cfg |= 1;
  if (context.extendedHeaders === true) cfg |= 2;
  if (context.noZeroes === true) cfg |= 1;
  if (context.pendingOption !== undefined) {
    cfg |= PENDING_OPTIONS.indexOf(context.pendingOption as number) << 2;
  }
  if (context.readLength !== undefined) cfg |= READ_LENGTHS.indexOf(context.readLength as number) << 2;
  if (context.maxPayloadLength !== undefined || context.maxStringLength !== undefined) cfg |= 0x80;
  return cfg;
}

type Opts = Record<string, unknown>;
type Decode = (b: Uint8Array, o: Opts) => Decoded<Frame>;

/** A frame decoder under test and how its configuration byte becomes options. */
export interface FrameDecoder {
  readonly name: string;
  readonly decode: Decode;
  readonly options: (cfg: number) => Opts;
}

function limits(cfg: number): Opts {
  return (cfg & 0x80) !== 0 ? { maxPayloadLength: 16, maxStringLength: 4 } : {};
}

function style(cfg: number): Opts {
  const e = frameOptions(cfg).extendedHeaders;
  return e === undefined ? {} : { extendedHeaders: e };
}

export const FRAME_DECODERS: readonly FrameDecoder[] = [
  { name: "greeting", decode: decodeGreeting as Decode, options: limits },
  { name: "client-flags", decode: decodeClientFlags as Decode, options: limits },
  {
    name: "export-name-reply",
    decode: decodeExportNameReply as unknown as Decode,
    options: (c) => ({ ...limits(c), noZeroes: frameOptions(c).noZeroes }),
  },
  { name: "option-request", decode: decodeOptionRequest as Decode, options: limits },
  {
    name: "option-reply",
    decode: decodeOptionReply as Decode,
    options: (c) => {
      const p = frameOptions(c).pendingOption;
      return p === undefined ? limits(c) : { ...limits(c), pendingOption: p };
    },
  },
  {
    name: "request",
    decode: decodeRequest as Decode,
    options: (c) => ({ ...limits(c), extendedHeaders: frameOptions(c).extendedHeaders === true }),
  },
  {
    name: "simple-reply",
    decode: decodeSimpleReply as Decode,
    options: (c) => {
      const r = frameOptions(c).readLength;
      return r === undefined ? { ...limits(c), ...style(c) } : { ...limits(c), ...style(c), readLength: r };
    },
  },
  {
    name: "reply-chunk",
    decode: decodeReplyChunk as Decode,
    options: (c) => ({ ...limits(c), ...style(c) }),
  },
  {
    name: "reply",
    decode: decodeReply as Decode,
    options: (c) => {
      const r = frameOptions(c).readLength;
      return r === undefined ? { ...limits(c), ...style(c) } : { ...limits(c), ...style(c), readLength: r };
    },
  },
];

/**
 * The wire bytes of a frame, re-encoded: the header from the encoder plus the payload the encoder leaves
 * to the caller (write data, read data, OFFSET_DATA data). `undefined` when there is no encoder for it.
 */
export function reencode(frame: Frame): Uint8Array | undefined {
  const f = frame as unknown as Record<string, unknown>;
  switch (frame.type) {
    case "newstyle-greeting":
    case "oldstyle-greeting":
      return encodeGreeting(frame);
    case "client-flags":
      return encodeClientFlags(frame);
    case "export-name-reply":
      return encodeExportNameReply(frame);
    case "option-request":
      return encodeOptionRequest(frame);
    case "option-reply":
      return encodeOptionReply(frame);
    case "request": {
      const h = encodeRequest(frame);
      const d = f.data;
      return d instanceof Uint8Array && d.length > 0 ? concatBytes([h, d]) : h;
    }
    case "simple-reply": {
      const h = encodeSimpleReply(frame);
      const d = f.data;
      return d instanceof Uint8Array && d.length > 0 ? concatBytes([h, d]) : h;
    }
    case "reply-chunk": {
      const h = encodeReplyChunk(frame);
      const p = frame.payload as unknown as Record<string, unknown>;
      return p.kind === "offset-data" && p.data instanceof Uint8Array ? concatBytes([h, p.data]) : h;
    }
    default:
      return undefined;
  }
}

/** Every frame accepted without a finding encodes back to exactly the bytes it was decoded from. */
export function checkRoundTrip(label: string, frame: Frame, original: Uint8Array): void {
  let enc: Uint8Array | undefined;
  try {
    enc = reencode(frame);
  } catch (e) {
    throw new Violation(
      "roundtrip-encode-threw",
      `${label}: ${frame.type} decoded without findings does not encode: ${(e as Error).message}`,
    );
  }
  if (enc === undefined) return;
  if (enc.length !== original.length || !enc.every((x, i) => x === original[i])) {
    throw new Violation(
      "roundtrip-bytes",
      `${label}: ${frame.type} decoded without findings encodes to other bytes:\n  in  ${
        hex(original, 200)
      }\n  out ${hex(enc, 200)}`,
    );
  }
}

function findingKey(f: Finding): string {
  return `${f.code}/${f.rule}@${f.offset}`;
}

function sameResult(a: Decoded<Frame>, b: Decoded<Frame>): boolean {
  if (!a.done || !b.done) return !a.done && !b.done && a.needed === b.needed;
  return a.byteLength === b.byteLength && a.findings.length === b.findings.length &&
    a.findings.every((f, i) => findingKey(f) === findingKey(b.findings[i]!)) && deepEqual(a.frame, b.frame);
}

/**
 * All checks of one frame decoder on one input:
 * - only NbdDecodeError escapes, with an offset inside the input, in both modes;
 * - strict and lenient agree: a frame lenient mode decodes without findings is what strict mode decodes;
 *   strict mode throws the first finding lenient mode reports (same code, offset and rule);
 * - findings lie inside the frame; `needed` is positive and a done frame fits the input;
 * - decoding at an offset inside a larger buffer gives the same result, shifted;
 * - a frame is self-delimiting: bytes after it change nothing; every shorter prefix says "need more"
 *   (never more than is missing);
 * - a frame decoded without findings encodes back to the same bytes.
 * Returns feature strings (which rules and frame kinds this input reached) for the corpus.
 */
export function checkFrameDecoder(d: FrameDecoder, input: Uint8Array, features: Set<string>): void {
  if (input.length === 0) return;
  const cfg = input[0]!;
  const b = input.subarray(1);
  const o = d.options(cfg);
  const n = b.length;
  const before = process.memoryUsage().external;
  const strict = guard(`${d.name} strict`, n, n, () => d.decode(b, { ...o, strict: true }));
  const lenient = guard(`${d.name} lenient`, n, n, () => d.decode(b, { ...o, strict: false }));
  // A length field (up to 2^64-1) never makes a frame decoder allocate: payloads are views of the input.
  const grown = process.memoryUsage().external - before;
  if (grown > FRAME_ALLOCATION_LIMIT) {
    throw new Violation("frame-allocation", `${d.name}: decoding ${n} bytes allocated ${grown} bytes`);
  }
  features.add(`cfg:${cfg & 0x83}`);
  note(features, "s", strict);
  note(features, "l", lenient);

  if (lenient.ok && lenient.value.done) {
    const r = lenient.value;
    if (r.byteLength < 1 || r.byteLength > n) {
      throw new Violation("frame-length", `${d.name}: byteLength ${r.byteLength} for ${n} bytes`);
    }
    for (const f of r.findings) {
      if (!(f.offset >= 0 && f.offset <= n)) {
        throw new Violation("finding-offset", `${d.name}: finding ${findingKey(f)} outside [0, ${n}]`);
      }
    }
    if (r.findings.length === 0) {
      if (!strict.ok) {
        throw new Violation(
          "strict-lenient",
          `${d.name}: lenient decodes without findings, strict throws ${showError(errorKey(strict.error))}`,
        );
      }
      if (!sameResult(strict.value, r)) {
        throw new Violation("strict-lenient", `${d.name}: strict and lenient decode different frames`);
      }
      checkRoundTrip(d.name, r.frame, b.subarray(0, r.byteLength));
    } else {
      const first = r.findings[0]!;
      if (strict.ok) {
        throw new Violation(
          "strict-lenient",
          `${d.name}: lenient reports ${findingKey(first)}, strict accepts the frame`,
        );
      }
      if (!sameError(errorKey(strict.error), first)) {
        throw new Violation(
          "strict-lenient",
          `${d.name}: strict throws ${showError(errorKey(strict.error))}, lenient's first finding is ${
            findingKey(first)
          }`,
        );
      }
    }
  } else if (lenient.ok && !lenient.value.done) {
    const need = lenient.value.needed;
    if (!(Number.isInteger(need) && need >= 1)) {
      throw new Violation("needed", `${d.name}: needed ${need}`);
    }
  }
  if (strict.ok && !lenient.ok) {
    throw new Violation(
      "strict-lenient",
      `${d.name}: strict decodes, lenient throws ${showError(errorKey(lenient.error))}`,
    );
  }

  // The same bytes at offset 7 of a larger buffer.
  const pad = 7;
  const shifted = new Uint8Array(pad + n + 3);
  shifted.fill(0xa5);
  shifted.set(b, pad);
  const at = shifted.subarray(0, pad + n);
  const ls = guard(
    `${d.name} at offset`,
    n,
    pad + n,
    () => d.decode(at, { ...o, strict: false, offset: pad }),
  );
  if (!sameShifted(lenient, ls, pad)) {
    throw new Violation("offset-option", `${d.name}: decoding at offset ${pad} gives another result`);
  }

  if (!lenient.ok || !lenient.value.done) return;
  const r = lenient.value;
  const frameBytes = b.subarray(0, r.byteLength);
  // Bytes after the frame change nothing.
  const more = concatBytes([frameBytes, Uint8Array.of(0x25, 0x60, 0x95, 0x13, 0, 0, 0, 0)]);
  const lm = guard(
    `${d.name} with trailing bytes`,
    more.length,
    more.length,
    () => d.decode(more, { ...o, strict: false }),
  );
  if (!lm.ok || !sameResult(lm.value, r)) {
    throw new Violation("self-delimiting", `${d.name}: bytes after the frame change its decoding`);
  }
  // Every shorter prefix needs more, and never more than is missing (a few prefixes per input).
  const cuts = new Set<number>([r.byteLength - 1, (r.byteLength * (1 + (b[r.byteLength - 1]! & 3))) >> 2]);
  for (const c of cuts) {
    if (c < 0 || c >= r.byteLength) continue;
    const p = guard(
      `${d.name} prefix ${c}`,
      c,
      c,
      () => d.decode(frameBytes.subarray(0, c), { ...o, strict: false }),
    );
    if (!p.ok) {
      // A violation inside the prefix can be reported as soon as its bytes are there: only then.
      if (p.error.offset < c && r.findings.some((f) => sameError(f, errorKey(p.error)))) continue;
      throw new Violation(
        "prefix",
        `${d.name}: the ${c}-byte prefix of a ${r.byteLength}-byte frame throws ${
          showError(errorKey(p.error))
        }`,
      );
    }
    if (p.value.done) {
      throw new Violation(
        "prefix",
        `${d.name}: the ${c}-byte prefix of a ${r.byteLength}-byte frame decodes`,
      );
    }
    if (p.value.needed < 1 || p.value.needed > r.byteLength - c) {
      throw new Violation(
        "needed",
        `${d.name}: the ${c}-byte prefix of a ${r.byteLength}-byte frame needs ${p.value.needed}`,
      );
    }
  }
}

function sameShifted(a: Outcome<Decoded<Frame>>, b: Outcome<Decoded<Frame>>, pad: number): boolean {
  if (!a.ok || !b.ok) {
    return !a.ok && !b.ok && a.error.code === b.error.code && a.error.rule === b.error.rule &&
      a.error.offset + pad === b.error.offset;
  }
  const x = a.value;
  const y = b.value;
  if (!x.done || !y.done) return !x.done && !y.done && x.needed === y.needed;
  if (x.byteLength !== y.byteLength || x.findings.length !== y.findings.length) return false;
  for (let i = 0; i < x.findings.length; i++) {
    const f = x.findings[i]!;
    const g = y.findings[i]!;
    if (f.code !== g.code || f.rule !== g.rule || f.offset + pad !== g.offset) return false;
  }
  return deepEqual(x.frame, y.frame);
}

function note(features: Set<string>, mode: string, o: Outcome<Decoded<Frame>>): void {
  if (!o.ok) {
    features.add(`${mode}:err:${o.error.code}:${o.error.rule}`);
    return;
  }
  const r = o.value;
  if (!r.done) {
    features.add(`${mode}:need:${Math.min(r.needed, 9)}`);
    return;
  }
  const f = r.frame as unknown as Record<string, unknown>;
  const kind = (f.data as { kind?: string } | undefined)?.kind ??
    (f.payload as { kind?: string } | undefined)?.kind;
  features.add(
    `${mode}:frame:${r.frame.type}:${bucket(f.command ?? f.option ?? f.reply ?? f.chunkType)}:${kind}`,
  );
  for (const x of r.findings) features.add(`${mode}:finding:${x.rule}`);
}

/** A code as a feature: small codes as themselves, others in two buckets (unknown codes are endless). */
function bucket(code: unknown): string {
  if (typeof code !== "number") return "";
  return code < 32 ? String(code) : code >= 0x80000000 ? (code < 0x80000010 ? `e${code & 15}` : "E") : "H";
}
