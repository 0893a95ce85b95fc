// Fuzz target of the allocation-free header decoders (decodeRequestHeaderInto, decodeReplyHeaderInto), which
// the stream decoders' fast paths use: on any bytes they only throw NbdDecodeError (bad-magic, at the same
// offset as the full decoder), a complete header gives the same fields as decodeRequest / decodeReply, and
// the header encoders write the same bytes back.
import {
  createReplyHeaderFields,
  createRequestHeaderFields,
  type Decoded,
  decodeReply,
  decodeReplyHeaderInto,
  decodeRequest,
  decodeRequestHeaderInto,
  encodeReplyHeaderInto,
  encodeRequestHeaderInto,
  type Frame,
} from "../../mod.ts";
import { errorKey, guard, hex, type Outcome, showError, Violation } from "./check.ts";

const TWO32 = 0x1_0000_0000n;

function big(hi: number, lo: number): bigint {
  return BigInt(hi) * TWO32 + BigInt(lo);
}

function sameMagicOutcome(label: string, into: Outcome<number>, full: Outcome<Decoded<Frame>>): void {
  const intoBad = !into.ok && into.error.code === "bad-magic";
  const fullBad = !full.ok && full.error.code === "bad-magic";
  if (!into.ok && into.error.code !== "bad-magic") {
    throw new Violation(
      "header-into",
      `${label}: throws ${showError(errorKey(into.error))}, only bad-magic is allowed`,
    );
  }
  if (intoBad !== fullBad || (intoBad && fullBad && into.error.offset !== full.error.offset)) {
    throw new Violation(
      "header-into",
      `${label}: ${intoBad ? "bad magic" : "magic accepted"}, the full decoder: ${
        full.ok ? "decodes" : showError(errorKey(full.error))
      }`,
    );
  }
}

/** Input: a style byte (bit 0: extended headers) and the bytes of a request or reply header. */
export function checkHeaders(input: Uint8Array, features: Set<string>): void {
  if (input.length === 0) return;
  const extended = (input[0]! & 1) === 1;
  const b = input.subarray(1);
  const n = b.length;
  const q = createRequestHeaderFields();
  const ri = guard("decodeRequestHeaderInto", n, n, () => decodeRequestHeaderInto(b, 0, q));
  const rf = guard(
    "decodeRequest",
    n,
    n,
    () => decodeRequest(b, { strict: false, extendedHeaders: extended }),
  );
  sameMagicOutcome("decodeRequestHeaderInto", ri, rf);
  if (ri.ok && ri.value > 0) {
    features.add(`hdr:request:${q.extended}`);
    const out = new Uint8Array(ri.value);
    const w = encodeRequestHeaderInto(out, 0, q);
    if (w !== ri.value || hex(out) !== hex(b.subarray(0, w))) {
      throw new Violation(
        "header-into",
        `encodeRequestHeaderInto does not write back the header: ${hex(b.subarray(0, ri.value))} -> ${
          hex(out)
        }`,
      );
    }
    if (rf.ok && rf.value.done && rf.value.frame.type === "request") {
      const f = rf.value.frame;
      if (
        f.extended !== q.extended || f.flags !== q.flags || f.command !== q.command ||
        f.cookie !== big(q.cookieHi, q.cookieLo) || f.offset !== big(q.offsetHi, q.offsetLo) ||
        f.length !== big(q.lengthHi, q.lengthLo)
      ) {
        throw new Violation(
          "header-into",
          `decodeRequestHeaderInto and decodeRequest read different fields from ${
            hex(b.subarray(0, ri.value))
          }`,
        );
      }
    }
  } else if (ri.ok && rf.ok && rf.value.done) {
    throw new Violation(
      "header-into",
      `decodeRequest decodes a frame whose header decodeRequestHeaderInto says is incomplete`,
    );
  }

  const p = createReplyHeaderFields();
  const pi = guard("decodeReplyHeaderInto", n, n, () => decodeReplyHeaderInto(b, 0, p));
  const pf = guard(
    "decodeReply",
    n,
    n,
    () => decodeReply(b, { strict: false, extendedHeaders: extended, readLength: 0 }),
  );
  sameMagicOutcome("decodeReplyHeaderInto", pi, pf);
  if (pi.ok && pi.value > 0) {
    features.add(`hdr:reply:${p.style}`);
    const out = new Uint8Array(pi.value);
    const w = encodeReplyHeaderInto(out, 0, p);
    if (w !== pi.value || hex(out) !== hex(b.subarray(0, w))) {
      throw new Violation(
        "header-into",
        `encodeReplyHeaderInto does not write back the header: ${hex(b.subarray(0, pi.value))} -> ${
          hex(out)
        }`,
      );
    }
    if (pf.ok && pf.value.done) {
      const f = pf.value.frame as unknown as Record<string, unknown>;
      const ok = f.type === "simple-reply"
        ? p.style === "simple" && f.error === p.error && f.cookie === big(p.cookieHi, p.cookieLo)
        : f.type === "reply-chunk" && p.style !== "simple" && f.flags === p.flags &&
          f.chunkType === p.chunkType &&
          f.cookie === big(p.cookieHi, p.cookieLo) && f.extended === (p.style === "extended");
      if (!ok) {
        throw new Violation(
          "header-into",
          `decodeReplyHeaderInto and decodeReply read different fields from ${hex(b.subarray(0, pi.value))}`,
        );
      }
    }
  } else if (pi.ok && pf.ok && pf.value.done) {
    throw new Violation(
      "header-into",
      `decodeReply decodes a frame whose header decodeReplyHeaderInto says is incomplete`,
    );
  }
}
