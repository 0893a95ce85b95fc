// Byte mutators for the fuzz campaign: the generic ones of libFuzzer and AFL (bit flips, interesting values,
// inserts, deletes, splices with another corpus entry) plus NBD-aware ones (the protocol's magics and the
// length fields the decoders trust: a u32 or u64 that counts the bytes after it is set to 0, to one off, to
// 2^32-1 or 2^64-1), and capture-aware ones (pcap/pcapng record lengths, snap lengths, TCP sequence numbers,
// records dropped, duplicated and swapped).

/** A small fast PRNG (xorshift128+ on 32-bit halves is enough here; sfc32 is simpler and well mixed). */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }

  /** True with probability 1/n. */
  oneIn(n: number): boolean {
    return this.below(n) === 0;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.below(xs.length)]!;
  }

  /** Small numbers more often than large ones (a length of a chunk, a count of edits). */
  small(max: number): number {
    const r = this.below(4);
    const cap = r === 0 ? 4 : r === 1 ? 16 : r === 2 ? 64 : max;
    return 1 + this.below(Math.min(cap, max));
  }
}

/** The NBD magics and other byte strings worth planting (as in a libFuzzer dictionary). */
export const DICTIONARY: readonly Uint8Array[] = [
  "4e42444d41474943", // NBDMAGIC
  "49484156454f5054", // IHAVEOPT
  "0000420281861253", // cliserv magic (oldstyle)
  "0003e889045565a9", // option reply magic
  "25609513", // request
  "21e41c71", // extended request
  "67446698", // simple reply
  "668e33ef", // structured reply
  "6e8a278c", // extended reply
  "00000001", // a small count
  "80000001", // NBD_REP_ERR_UNSUP
  "ffffffff",
  "7fffffff",
  "ffffffffffffffff",
  "0000000100000000",
  "00001000",
  "0a0d0d0a", // pcapng section header
  "1a2b3c4d", // pcapng byte-order magic
  "a1b2c3d4", // pcap magic
  "d4c3b2a1",
  "a1b23c4d",
  "2a39", // port 10809
].map((h) => Uint8Array.from(h.match(/../g)!, (x) => parseInt(x, 16)));

const INTERESTING_U32: readonly number[] = [
  0,
  1,
  2,
  4,
  8,
  12,
  16,
  28,
  32,
  0x7f,
  0x80,
  0xff,
  0x100,
  0x1000,
  0x10000,
  0x400000,
  0x4000000,
  0x7fffffff,
  0x80000000,
  0xfffffffe,
  0xffffffff,
];

function put32(b: Uint8Array, at: number, v: number, le: boolean): void {
  for (let i = 0; i < 4 && at + i < b.length; i++) {
    b[at + i] = le ? (v >>> (8 * i)) & 0xff : (v >>> (24 - 8 * i)) & 0xff;
  }
}

function get32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

function concat(...parts: Uint8Array[]): Uint8Array {
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

/** Positions of big-endian u32 fields that count the bytes that follow them (an NBD length field). */
function lengthFields(b: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i + 4 <= b.length && out.length < 32; i++) {
    const v = get32(b, i);
    const rest = b.length - i - 4;
    if (v > 0 && v <= rest && (v === rest || rest - v <= 64 || rest - v === 4 || rest - v === 8)) out.push(i);
  }
  return out;
}

/** One generic or NBD-aware edit of `input` (a fresh array; the input is never changed). */
export function mutateBytes(
  rng: Rng,
  input: Uint8Array,
  corpus: readonly Uint8Array[],
  maxLength: number,
): Uint8Array {
  let b: Uint8Array = Uint8Array.from(input);
  const n = 1 + (rng.oneIn(3) ? rng.below(8) : 0);
  for (let k = 0; k < n; k++) {
    switch (rng.below(15)) {
      case 0: // flip a bit
        if (b.length > 0) b[rng.below(b.length)]! ^= 1 << rng.below(8);
        break;
      case 1: // random byte
        if (b.length > 0) b[rng.below(b.length)] = rng.below(256);
        break;
      case 2: // interesting u8
        if (b.length > 0) b[rng.below(b.length)] = rng.pick([0, 1, 0x7f, 0x80, 0xff]);
        break;
      case 3: // interesting u32, either byte order
        if (b.length >= 4) put32(b, rng.below(b.length - 3), rng.pick(INTERESTING_U32), rng.oneIn(3));
        break;
      case 4: { // a length field set to something the bytes do not back
        const fields = lengthFields(b);
        if (fields.length > 0) {
          const at = rng.pick(fields);
          const v = get32(b, at);
          const choices = [0, v - 1, v + 1, v + 4, v + 8, v * 2, 0xffffffff, 0x7fffffff, 0x4000001, 0x10000];
          put32(b, at, rng.pick(choices) >>> 0, false);
        } else if (b.length >= 4) {
          put32(b, rng.below(b.length - 3), rng.pick(INTERESTING_U32), false);
        }
        break;
      }
      case 5: { // add to or subtract from a u32
        if (b.length >= 4) {
          const at = rng.below(b.length - 3);
          put32(b, at, (get32(b, at) + (rng.below(33) - 16)) >>> 0, false);
        }
        break;
      }
      case 6: { // plant a dictionary word
        const w = rng.pick(DICTIONARY);
        if (rng.oneIn(2) && b.length >= w.length) b.set(w, rng.below(b.length - w.length + 1));
        else {
          const at = rng.below(b.length + 1);
          b = concat(b.subarray(0, at), w, b.subarray(at));
        }
        break;
      }
      case 7: { // delete a range
        if (b.length > 0) {
          const at = rng.below(b.length);
          const len = rng.small(b.length - at);
          b = concat(b.subarray(0, at), b.subarray(at + len));
        }
        break;
      }
      case 8: { // insert random bytes
        const at = rng.below(b.length + 1);
        const ins = new Uint8Array(rng.small(64));
        const fill = rng.below(3);
        for (let i = 0; i < ins.length; i++) ins[i] = fill === 0 ? 0 : fill === 1 ? 0xff : rng.below(256);
        b = concat(b.subarray(0, at), ins, b.subarray(at));
        break;
      }
      case 9: { // duplicate a range (repeated frames)
        if (b.length > 0) {
          const at = rng.below(b.length);
          const len = rng.small(b.length - at);
          const to = rng.below(b.length + 1);
          b = concat(b.subarray(0, to), b.slice(at, at + len), b.subarray(to));
        }
        break;
      }
      case 10: { // copy a range over another
        if (b.length > 1) {
          const from = rng.below(b.length);
          const len = rng.small(b.length - from);
          const to = rng.below(b.length);
          b.set(b.slice(from, from + Math.min(len, b.length - to)), to);
        }
        break;
      }
      case 11: { // splice with another corpus entry
        if (corpus.length > 0) {
          const other = rng.pick(corpus);
          const at = rng.below(b.length + 1);
          const from = rng.below(other.length + 1);
          b = rng.oneIn(2)
            ? concat(b.subarray(0, at), other.subarray(from))
            : concat(b.subarray(0, at), other.subarray(from, from + rng.small(256)), b.subarray(at));
        }
        break;
      }
      case 12: // truncate
        if (b.length > 0) b = b.slice(0, rng.below(b.length));
        break;
      case 13: { // append a whole corpus entry (a second frame after the first)
        if (corpus.length > 0) b = concat(b, rng.pick(corpus));
        break;
      }
      default: { // set a 64-bit field to 2^64-1 or 2^63 (sizes, offsets, extended lengths)
        if (b.length >= 8) {
          const at = rng.below(b.length - 7);
          b.fill(0xff, at, at + 8);
          if (rng.oneIn(2)) b[at] = 0x80;
          if (rng.oneIn(3)) b.fill(0, at + 1, at + 8);
        }
      }
    }
  }
  return b.length > maxLength ? b.slice(0, maxLength) : b;
}

// ---- captures ----------------------------------------------------------------------------------------

/** A record of a pcap file: where its 16-byte header starts and its captured length. */
interface PcapRecord {
  at: number;
  length: number;
}

function pcapRecords(b: Uint8Array): { le: boolean; records: PcapRecord[] } | undefined {
  if (b.length < 24) return undefined;
  const m = get32(b, 0);
  let le: boolean;
  if (m === 0xa1b2c3d4 || m === 0xa1b23c4d) le = false;
  else if (m === 0xd4c3b2a1 || m === 0x4d3cb2a1) le = true;
  else return undefined;
  const records: PcapRecord[] = [];
  for (let at = 24; at + 16 <= b.length && records.length < 100000;) {
    const length = le
      ? (b[at + 8]! | (b[at + 9]! << 8) | (b[at + 10]! << 16) | (b[at + 11]! << 24)) >>> 0
      : get32(b, at + 8);
    if (at + 16 + length > b.length) break;
    records.push({ at, length });
    at += 16 + length;
  }
  return { le, records };
}

/** Where the TCP header starts in a pcap record's data (Ethernet, loopback, cooked v1/v2, raw), or -1. */
function tcpHeaderAt(b: Uint8Array, dataAt: number, dataLength: number, linkType: number): number {
  let ip: number;
  if (linkType === 1) ip = 14;
  else if (linkType === 0 || linkType === 108) ip = 4;
  else if (linkType === 113) ip = 16;
  else if (linkType === 276) ip = 20;
  else if (linkType === 101 || linkType === 228 || linkType === 229) ip = 0;
  else return -1;
  const at = dataAt + ip;
  if (ip + 40 > dataLength) return -1;
  const v = b[at]! >> 4;
  if (v === 4) return b[at + 9] === 6 ? at + (b[at]! & 0xf) * 4 : -1;
  if (v === 6) return b[at + 6] === 6 ? at + 40 : -1;
  return -1;
}

/**
 * One capture-aware edit of a pcap file: a record's lengths, the snap length, a TCP sequence number or
 * flags, records dropped, duplicated, swapped or moved; a packet's payload mutated as NBD bytes. Falls back
 * to {@link mutateBytes} for pcapng and anything that does not parse.
 */
export function mutateCapture(
  rng: Rng,
  input: Uint8Array,
  corpus: readonly Uint8Array[],
  maxLength: number,
): Uint8Array {
  const parsed = pcapRecords(input);
  if (parsed === undefined || parsed.records.length === 0 || rng.oneIn(4)) {
    return mutateBytes(rng, input, corpus, maxLength);
  }
  const { le, records } = parsed;
  const linkType = le
    ? (input[20]! | (input[21]! << 8) | (input[22]! << 16) | (input[23]! << 24)) >>> 0
    : get32(input, 20);
  const head = input.subarray(0, 24);
  const recs = records.map((r) => input.subarray(r.at, r.at + 16 + r.length));
  const out = Uint8Array.from(input);
  const r = rng.pick(records);
  switch (rng.below(10)) {
    case 0: // snap length absurd
      put32(out, 16, rng.pick([0, 1, 16, 0xffff, 0x7fffffff, 0xffffffff]), le);
      return out;
    case 1: // captured length larger than the data, or absurd
      put32(
        out,
        r.at + 8,
        rng.pick([r.length + 1, r.length + 1000, 0x200000, 0x3ffff0, 0x400001, 0x7fffffff, 0xffffffff, 0]),
        le,
      );
      return out;
    case 2: // original length below or far above the captured one
      put32(out, r.at + 12, rng.pick([0, r.length - 1, r.length + 1, 0xffffffff]) >>> 0, le);
      return out;
    case 3: { // TCP sequence jump
      const t = tcpHeaderAt(out, r.at + 16, r.length, linkType);
      if (t < 0) return mutateBytes(rng, input, corpus, maxLength);
      const seq = get32(out, t + 4);
      put32(
        out,
        t + 4,
        (seq + rng.pick([1, -1, 1000, 0x10000000, 0x7fffffff, 0x80000000, 0xfffffff0])) >>> 0,
        false,
      );
      return out;
    }
    case 4: { // TCP flags
      const t = tcpHeaderAt(out, r.at + 16, r.length, linkType);
      if (t < 0) return mutateBytes(rng, input, corpus, maxLength);
      out[t + 13] = rng.pick([0x02, 0x12, 0x01, 0x11, 0x04, 0x14, 0x18, 0x00, 0xff]);
      return out;
    }
    case 5: { // mutate a packet's TCP payload as NBD bytes (its lengths stay as recorded)
      const t = tcpHeaderAt(out, r.at + 16, r.length, linkType);
      if (t < 0) return mutateBytes(rng, input, corpus, maxLength);
      const payloadAt = t + ((out[t + 12]! >> 4) * 4);
      const end = r.at + 16 + r.length;
      if (payloadAt >= end) return mutateBytes(rng, input, corpus, maxLength);
      const p = mutateBytes(rng, out.subarray(payloadAt, end), [], end - payloadAt);
      const q = new Uint8Array(end - payloadAt);
      q.set(p.subarray(0, q.length));
      out.set(q, payloadAt);
      return out;
    }
    case 6: { // drop a record
      const i = rng.below(recs.length);
      return concat(head, ...recs.slice(0, i), ...recs.slice(i + 1), input.subarray(endOf(records)));
    }
    case 7: { // duplicate a record (retransmission)
      const i = rng.below(recs.length);
      const j = rng.below(recs.length + 1);
      const copy = [...recs];
      copy.splice(j, 0, recs[i]!);
      return cap(concat(head, ...copy, input.subarray(endOf(records))), maxLength);
    }
    case 8: { // swap two records (reordering)
      const i = rng.below(recs.length);
      const j = Math.min(recs.length - 1, i + 1 + rng.below(4));
      const copy = [...recs];
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
      return concat(head, ...copy, input.subarray(endOf(records)));
    }
    default: // cut the file inside a record
      return out.slice(0, r.at + rng.below(16 + r.length));
  }
}

function endOf(records: readonly PcapRecord[]): number {
  const last = records[records.length - 1]!;
  return last.at + 16 + last.length;
}

function cap(b: Uint8Array, maxLength: number): Uint8Array {
  return b.length > maxLength ? b.slice(0, maxLength) : b;
}
