// Fuzz targets of the capture readers and TCP reassembly: whole and split reading give the same packets,
// findings and errors; only NbdDecodeError escapes; the reader allocates no more than the bytes it was
// given; the reassembler never throws, its streams are contiguous (every byte is data or a gap), its fast
// path (onData) and general path agree, and it loses no byte silently.
import process from "node:process";
import {
  type CapturePacket,
  CaptureReader,
  decodeTcpPacket,
  formatAddress,
  readCapture,
  type TcpEvent,
  TcpReassembler,
  type TraceFinding,
} from "../../trace.ts";
import { errorKey, guard, hex, inputSeed, type Outcome, sameError, showError, Violation } from "./check.ts";
import { Rng } from "./mutate.ts";
import { split } from "./streams.ts";

interface ReadResult {
  readonly packets: readonly string[];
  readonly raw: readonly CapturePacket[];
  readonly findings: readonly string[];
}

function packetKey(p: CapturePacket): string {
  return `${p.index} ${p.offset} ${p.dataOffset} ${p.interfaceId} ${p.linkType} ${p.seconds}.${p.nanoseconds} ${p.originalLength} ${
    hex(p.data)
  }`;
}

function findingKey(f: TraceFinding): string {
  return `${f.code}/${f.rule}@${f.offset} p${f.packet ?? ""} c${f.connection ?? ""} ${f.direction ?? ""} s${
    f.streamOffset ?? ""
  } l${f.length ?? ""}`;
}

function readChunks(chunks: readonly Uint8Array[], strict: boolean): ReadResult {
  const reader = new CaptureReader({ strict });
  const raw: CapturePacket[] = [];
  const findings: string[] = [];
  for (const c of chunks) {
    for (const p of reader.push(c)) raw.push(p);
    for (const f of reader.takeFindings()) findings.push(findingKey(f));
  }
  reader.end();
  for (const f of reader.takeFindings()) findings.push(findingKey(f));
  return { packets: raw.map(packetKey), raw, findings };
}

function sameRead(a: Outcome<ReadResult>, b: Outcome<ReadResult>): string | undefined {
  if (a.ok !== b.ok) {
    return `${a.ok ? "reads" : "throws " + showError(errorKey(a.error))} vs ${
      b.ok ? "reads" : "throws " + showError(errorKey(b.error))
    }`;
  }
  if (!a.ok && !b.ok) {
    return sameError(errorKey(a.error), errorKey(b.error))
      ? undefined
      : `throws ${showError(errorKey(a.error))} vs ${showError(errorKey(b.error))}`;
  }
  if (a.ok && b.ok) {
    const x = a.value;
    const y = b.value;
    if (x.packets.join("\n") !== y.packets.join("\n")) {
      return `packets differ (${x.packets.length} vs ${y.packets.length})`;
    }
    if (x.findings.join("\n") !== y.findings.join("\n")) {
      return `findings differ:\n  ${x.findings.join("; ")}\n  ${y.findings.join("; ")}`;
    }
  }
  return undefined;
}

/** Bytes of memory outside the JS heap alive now: typed arrays' storage. */
export function arrayBufferBytes(): number {
  // `external` counts typed arrays' storage on Node and Deno alike (Deno reports `arrayBuffers` as 0).
  return process.memoryUsage().external;
}

/** The most a reader may allocate beyond the input it was given (a record spanning chunks is copied). */
const READER_SLACK = 1 << 20;

/**
 * All checks of the capture readers on one capture file:
 * - readCapture and CaptureReader, strict and lenient, only throw NbdDecodeError with an offset in the file;
 * - whole, random split and byte-by-byte reading give the same packets, findings and errors;
 * - reading in small chunks allocates no more than the input's size plus a little (no record's announced
 *   length is allocated up front);
 * then the TCP checks on the packets.
 */
export function checkCapture(b: Uint8Array, features: Set<string>): void {
  const n = b.length;
  const rng = new Rng(inputSeed(b, 4));
  const rc = guard("readCapture", n, n, () => readCapture(b));
  guard("readCapture lenient", n, n, () => readCapture(b, { strict: false }));
  if (!rc.ok) features.add(`cap:err:${rc.error.rule}`);
  for (const strict of [true, false]) {
    const whole = guard(`CaptureReader strict=${strict} whole`, n, n, () => readChunks([b], strict));
    const before = arrayBufferBytes();
    let peak = 0;
    const chunks = split(rng, b);
    const parts = guard(`CaptureReader strict=${strict} split`, n, n, () => {
      const reader = new CaptureReader({ strict });
      const raw: CapturePacket[] = [];
      const findings: string[] = [];
      let k = 0;
      for (const c of chunks) {
        for (const p of reader.push(c)) raw.push(p);
        for (const f of reader.takeFindings()) findings.push(findingKey(f));
        if (++k % 64 === 0 || c.length > 4096) peak = Math.max(peak, arrayBufferBytes() - before);
      }
      peak = Math.max(peak, arrayBufferBytes() - before);
      reader.end();
      for (const f of reader.takeFindings()) findings.push(findingKey(f));
      return { packets: raw.map(packetKey), raw, findings };
    });
    if (peak > n + READER_SLACK) {
      throw new Violation(
        "capture-allocation",
        `CaptureReader: reading a ${n}-byte capture in chunks allocated ${peak} bytes of array buffers`,
      );
    }
    const d1 = sameRead(whole, parts);
    if (d1 !== undefined) {
      throw new Violation("capture-split-mismatch", `CaptureReader strict=${strict}: whole vs split: ${d1}`);
    }
    // pushComplete, as the command line reads files: the unconsumed tail passed again with the next chunk.
    const pc = guard(`CaptureReader strict=${strict} pushComplete`, n, n, () => {
      const reader = new CaptureReader({ strict });
      const raw: CapturePacket[] = [];
      const findings: string[] = [];
      let tail: Uint8Array = new Uint8Array(0);
      for (const c of chunks) {
        const buf = new Uint8Array(tail.length + c.length);
        buf.set(tail);
        buf.set(c, tail.length);
        for (const p of reader.pushComplete(buf)) raw.push(p);
        for (const f of reader.takeFindings()) findings.push(findingKey(f));
        tail = buf.subarray(buf.length - reader.unconsumed);
      }
      if (tail.length > 0) { for (const p of reader.push(tail)) raw.push(p); }
      reader.end();
      for (const f of reader.takeFindings()) findings.push(findingKey(f));
      return { packets: raw.map(packetKey), raw, findings };
    });
    const d3 = sameRead(whole, pc);
    if (d3 !== undefined) {
      throw new Violation(
        "capture-split-mismatch",
        `CaptureReader strict=${strict}: push vs pushComplete: ${d3}`,
      );
    }
    if (n <= 4096) {
      const one: Uint8Array[] = [];
      for (let i = 0; i < n; i++) one.push(b.subarray(i, i + 1));
      const bb = guard(`CaptureReader strict=${strict} byte by byte`, n, n, () => readChunks(one, strict));
      const d2 = sameRead(whole, bb);
      if (d2 !== undefined) {
        throw new Violation(
          "capture-split-mismatch",
          `CaptureReader strict=${strict}: whole vs byte by byte: ${d2}`,
        );
      }
    }
    if (!strict && whole.ok) {
      features.add(`cap:packets:${Math.min(whole.value.raw.length, 4)}`);
      for (const f of whole.value.findings) features.add(`cap:finding:${f.split("@")[0]}`);
      checkTcp(whole.value.raw, features, n);
    }
  }
}

function eventKey(e: TcpEvent): string {
  switch (e.type) {
    case "open":
      return `open ${e.connection.id} ${e.connection.clientBy} ${e.connection.client.address}:${e.connection.client.port} ${e.connection.server.address}:${e.connection.server.port}`;
    case "data":
      return `data ${e.connection} ${e.direction} ${e.streamOffset} ${e.packet} ${hex(e.bytes)}`;
    case "gap":
      return `gap ${e.connection} ${e.direction} ${e.streamOffset} ${e.length} ${findingKey(e.finding)}`;
    case "close":
      return `close ${e.connection} ${e.direction} ${e.reason} ${e.streamOffset}`;
    default:
      return `finding ${findingKey(e.finding)}`;
  }
}

/** Data events merged: runs of consecutive data of one direction become one, so that delivery granularity does not count. */
function merged(keys: readonly TcpEvent[]): string[] {
  const out: string[] = [];
  let run: { c: number; d: string; off: number; bytes: string } | undefined;
  const flush = () => {
    if (run !== undefined) out.push(`data ${run.c} ${run.d} ${run.off} ${run.bytes}`);
    run = undefined;
  };
  for (const e of keys) {
    if (e.type === "data") {
      if (
        run !== undefined && run.c === e.connection && run.d === e.direction &&
        run.off + run.bytes.length / 2 === e.streamOffset
      ) {
        run.bytes += hex(e.bytes);
        continue;
      }
      flush();
      run = { c: e.connection, d: e.direction, off: e.streamOffset, bytes: hex(e.bytes) };
      continue;
    }
    flush();
    out.push(eventKey(e));
  }
  flush();
  return out;
}

/**
 * The TCP reassembler on a capture's packets: it never throws; per connection and direction, data and gaps
 * follow each other without a hole or an overlap; with `onData` (its in-order fast path) it reports the same
 * bytes at the same offsets as without.
 */
function checkTcp(packets: readonly CapturePacket[], features: Set<string>, n: number): void {
  const plain = guard("TcpReassembler", n, Number.MAX_SAFE_INTEGER, () => {
    const tcp = new TcpReassembler({ isServerPort: (p) => p === 10809 });
    const out: TcpEvent[] = [];
    for (const p of packets) for (const e of tcp.push(p)) out.push(e);
    for (const e of tcp.end()) out.push(e);
    return out;
  });
  if (!plain.ok) throw new Violation("tcp-threw", `TcpReassembler threw ${showError(errorKey(plain.error))}`);
  const events = plain.value;
  const next = new Map<string, number>();
  for (const e of events) {
    if (e.type === "finding") features.add(`tcp:finding:${e.finding.rule}`);
    if (e.type === "gap") features.add(`tcp:gap:${e.finding.rule}`);
    if (e.type === "close") features.add(`tcp:close:${e.reason}`);
    if (e.type !== "data" && e.type !== "gap") continue;
    const k = `${e.connection} ${e.direction}`;
    const at = next.get(k) ?? 0;
    if (e.streamOffset !== at) {
      throw new Violation(
        "tcp-discontiguous",
        `TcpReassembler: ${e.type} of connection ${k} at stream offset ${e.streamOffset}, expected ${at}`,
      );
    }
    const len = e.type === "data" ? e.bytes.length : e.length;
    if (!(len > 0) && e.type === "gap") {
      throw new Violation("tcp-discontiguous", `TcpReassembler: empty gap at ${at}`);
    }
    next.set(k, at + len);
  }
  const fast = guard("TcpReassembler onData", n, Number.MAX_SAFE_INTEGER, () => {
    const out: TcpEvent[] = [];
    const tcp = new TcpReassembler({
      isServerPort: (p) => p === 10809,
      onData: (connection, direction, streamOffset, bytes, packet) =>
        out.push({
          type: "data",
          connection,
          direction,
          streamOffset,
          bytes,
          packet: packet.index,
          seconds: packet.seconds,
          nanoseconds: packet.nanoseconds,
        }),
    });
    for (const p of packets) for (const e of tcp.push(p)) out.push(e);
    for (const e of tcp.end()) out.push(e);
    return out;
  });
  if (!fast.ok) {
    throw new Violation("tcp-threw", `TcpReassembler (onData) threw ${showError(errorKey(fast.error))}`);
  }
  const a = merged(events);
  const b = merged(fast.value);
  if (a.join("\n") !== b.join("\n")) {
    const i = a.findIndex((x, j) => x !== b[j]);
    throw new Violation(
      "tcp-fast-path-mismatch",
      `TcpReassembler with onData differs at event ${i}:\n  A ${a[i]?.slice(0, 300)}\n  B ${
        b[i]?.slice(0, 300)
      }`,
    );
  }
}

// ---- TCP loss check on reordered real captures ------------------------------------------------------------

/**
 * A real capture's packets, reordered, duplicated and partly dropped (whole packets only, bytes unchanged):
 * every payload byte of a packet that was kept must come out as data at its place in the stream, or be
 * covered by a gap or a finding of that direction. A byte dropped without a word is a finding. The input
 * is a pcap file; the permutation comes from the input's hash.
 */
export function checkTcpLoss(b: Uint8Array, features: Set<string>): void {
  const cap = guard("readCapture", b.length, b.length, () => readCapture(b, { strict: false }));
  if (!cap.ok) return;
  const packets = cap.value.packets;
  if (packets.length < 2) return;
  // The reference: each packet's payload bytes and where they go, from the packets in capture order.
  const ref = placements(packets);
  if (ref === undefined) return;
  const rng = new Rng(inputSeed(b, 5));
  // FIN and RST segments stay last, in their order: data after a reset is dropped by design, and data
  // after a FIN beyond its sequence number is bogus. Only data-carrying and bare ACK segments move.
  const ends = packets.map((p, i) => [i, tcpFlags(p)] as const).filter(([, f]) =>
    f !== undefined && (f & 5) !== 0
  )
    .map(([i]) => i);
  const order = packets.map((_, i) => i).filter((i) => !ends.includes(i));
  const swaps = 1 + rng.below(6);
  for (let k = 0; k < swaps; k++) {
    const i = rng.below(order.length);
    const j = Math.min(order.length - 1, i + 1 + rng.below(5));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const dropped = new Set<number>();
  if (rng.oneIn(2)) dropped.add(order[0]!); // often the SYN
  if (rng.oneIn(3)) dropped.add(rng.below(order.length));
  const kept = [...order.filter((i) => !dropped.has(i)), ...ends];
  const tcp = new TcpReassembler({ isServerPort: (p) => p === 10809 });
  const events: TcpEvent[] = [];
  const r = guard("TcpReassembler reordered", b.length, Number.MAX_SAFE_INTEGER, () => {
    for (const i of kept) for (const e of tcp.push({ ...packets[i]!, index: i })) events.push(e);
    for (const e of tcp.end()) events.push(e);
  });
  if (!r.ok) throw new Violation("tcp-threw", `TcpReassembler threw ${showError(errorKey(r.error))}`);
  // What came out, per connection 4-tuple and direction: the payload bytes delivered, as a multiset of
  // (packet, byte index); and whether any gap or finding was reported.
  const delivered = new Map<string, number>();
  const warned = new Set<string>();
  const conns = tcp.connections;
  const key = (c: number, d: string) => {
    const x = conns[c]!;
    const client = `${x.client.address}:${x.client.port}`;
    const server = `${x.server.address}:${x.server.port}`;
    return d === "c2s" ? `${client}>${server}` : `${server}>${client}`;
  };
  for (const e of events) {
    if (e.type === "data") {
      delivered.set(
        key(e.connection, e.direction),
        (delivered.get(key(e.connection, e.direction)) ?? 0) + e.bytes.length,
      );
    } else if (e.type === "gap") warned.add(key(e.connection, e.direction));
    else if (
      e.type === "finding" && e.finding.connection !== undefined && e.finding.direction !== undefined
    ) {
      warned.add(key(e.finding.connection, e.finding.direction));
    }
  }
  // Bytes the kept packets carry, per flow, counted once per sequence number (retransmissions overlap).
  const carried = new Map<string, Set<number>>();
  for (const i of kept) {
    const p = ref.get(i);
    if (p === undefined || p.length === 0) continue;
    let s = carried.get(p.flow);
    if (s === undefined) carried.set(p.flow, s = new Set());
    for (let k = 0; k < p.length; k++) s.add(p.start + k);
  }
  // Where each flow's stream starts for the reassembler: at the first segment of the flow it saw (data or
  // not), unless that is a SYN; a SYN seen after data (reordered) starts a new connection, whose streams
  // start again. The payload bytes of a packet that arrives when its flow's stream already starts after them
  // are the ones issue 15 (1.6) says are dropped silently: counted per flow, as the packets come.
  const bases = new Map<string, number>();
  for (const p of ref.values()) bases.set(p.flow, (p.seq - p.start) >>> 0);
  // Whether a reordered SYN restarts the streams depends on which side the reassembler took for the client,
  // so the bytes are counted both ways and the larger count is taken.
  const before = new Map<string, number>();
  for (const restart of [true, false]) {
    const starts = new Map<string, number>();
    const counted = new Map<string, number>();
    for (const i of kept) {
      const r = decodeTcpPacket(packets[i]!.data, packets[i]!.linkType);
      if (r.type !== "tcp") continue;
      const flow = `${formatAddress(r.sourceAddress)}:${r.sourcePort}>${
        formatAddress(r.destinationAddress)
      }:${r.destinationPort}`;
      const back = `${formatAddress(r.destinationAddress)}:${r.destinationPort}>${
        formatAddress(r.sourceAddress)
      }:${r.sourcePort}`;
      if (restart && (r.flags & 0x12) === 0x02) {
        starts.delete(flow);
        starts.delete(back);
      }
      const base = bases.get(flow);
      if (base === undefined) continue;
      const at = (r.seq - base) | 0;
      if (!starts.has(flow)) starts.set(flow, (r.flags & 2) !== 0 ? 0 : at);
      const n = Math.min(r.payload.length, Math.max(0, starts.get(flow)! - at));
      if (n > 0) counted.set(flow, (counted.get(flow) ?? 0) + n);
    }
    for (const [flow, n] of counted) before.set(flow, Math.max(n, before.get(flow) ?? 0));
  }
  for (const [flow, s] of carried) {
    const got = delivered.get(flow) ?? 0;
    features.add(`loss:${got < s.size ? "short" : "full"}:${warned.has(flow)}`);
    if (got < s.size && !warned.has(flow)) {
      const dropped = before.get(flow) ?? 0;
      const prefix = dropped > 0 && got >= s.size - dropped;
      throw new Violation(
        prefix ? "tcp-silent-loss-prefix" : "tcp-silent-loss",
        `TcpReassembler: flow ${flow} carried ${s.size} bytes in the packets kept (order ${
          kept.join(",")
        }), ${got} delivered${
          prefix ? ` (${dropped} bytes came before the first segment seen of their connection)` : ""
        }, no gap or finding`,
      );
    }
  }
}

/** Each packet's TCP payload: its flow and its place in that flow's stream (relative sequence numbers). */
function placements(
  packets: readonly CapturePacket[],
): Map<number, { flow: string; start: number; length: number; seq: number }> | undefined {
  const tcp = new TcpReassembler({ isServerPort: (p) => p === 10809 });
  const out = new Map<number, { flow: string; start: number; length: number; seq: number }>();
  const conns = tcp.connections;
  let bad = false;
  for (const p of packets) {
    for (const e of tcp.push(p)) {
      if (e.type === "gap" || e.type === "finding") bad = true;
      if (e.type !== "data") continue;
      const x = conns[e.connection]!;
      const client = `${x.client.address}:${x.client.port}`;
      const server = `${x.server.address}:${x.server.port}`;
      const flow = e.direction === "c2s" ? `${client}>${server}` : `${server}>${client}`;
      // A packet delivers its own bytes (in capture order, a clean capture delivers each packet at once).
      if (e.packet !== p.index) bad = true;
      const r = decodeTcpPacket(p.data, p.linkType);
      if (r.type !== "tcp" || r.payload.length !== e.bytes.length) bad = true;
      else out.set(p.index, { flow, start: e.streamOffset, length: e.bytes.length, seq: r.seq });
    }
  }
  tcp.end();
  return bad ? undefined : out;
}

/** The TCP flags of a packet, when it is a TCP segment. */
function tcpFlags(p: CapturePacket): number | undefined {
  const r = decodeTcpPacket(p.data, p.linkType);
  return r.type === "tcp" ? r.flags : undefined;
}
