/**
 * Statistics of a capture's NBD connections, for `nbd-codec stats`: per connection its endpoints, duration,
 * what was negotiated, commands and errors counted, bytes read and written, the most requests in flight,
 * response times per command (count, min, median, p90, p99, max: the service-response-time table that
 * Wireshark does not have for NBD) and findings counted by rule. Feed it the dissector's events
 * ({@link TraceStats} is a `DissectSink`), then read {@link TraceStats.report}.
 *
 * @module
 */
import type { TraceFinding } from "./capture.ts";
import type { TraceConnection } from "./dissector.ts";
import type { Finding } from "./errors.ts";
import { flagNames } from "./constants.ts";
import { codeName, type JsonObject, type JsonValue } from "./format.ts";
import type { TcpEndpoint } from "./tcp.ts";
import type { TraceEvent } from "./trace_event.ts";

const READ = 0;
const WRITE = 1;
const DISC = 2;
const DONE = 1;
const NO_ZEROES = 0x0002;
const C_NO_ZEROES = 0x0002;
const REQUEST_HEADER = 28;
const EXTENDED_REQUEST_HEADER = 32;
const SIMPLE_REPLY_HEADER = 16;

/**
 * Response times of one command, in nanoseconds (nearest-rank percentiles over every request of that
 * command whose reply was seen). Absent when no reply had a time (raw streams).
 *
 * @example
 * ```ts
 * import type { ResponseTimes } from "@nbd/codec/trace";
 * const r: ResponseTimes = { count: 1, min: 211000, median: 211000, p90: 211000, p99: 211000, max: 211000 };
 * console.log(r.median); // 211000
 * ```
 */
export interface ResponseTimes {
  /** Replies with a response time. */
  readonly count: number;
  /** Shortest, nanoseconds. */
  readonly min: number;
  /** Median (50th percentile, nearest rank), nanoseconds. */
  readonly median: number;
  /** 90th percentile, nanoseconds. */
  readonly p90: number;
  /** 99th percentile, nanoseconds. */
  readonly p99: number;
  /** Longest, nanoseconds. */
  readonly max: number;
}

/**
 * One command's counts in a connection.
 *
 * @example
 * ```ts
 * import type { CommandStats } from "@nbd/codec/trace";
 * const c: CommandStats = { command: "NBD_CMD_READ", requests: 3, replies: 3, errors: 0 };
 * console.log(c.command); // "NBD_CMD_READ"
 * ```
 */
export interface CommandStats {
  /** The command's spec name. */
  readonly command: string;
  /** Requests sent. */
  readonly requests: number;
  /** Requests whose reply ended (a simple reply, or the chunk with NBD_REPLY_FLAG_DONE). */
  readonly replies: number;
  /** Requests answered with an error (a simple reply's error, or an error chunk). */
  readonly errors: number;
  /** Response times, when any reply had one. */
  readonly responseTimes?: ResponseTimes;
}

/**
 * What a connection negotiated, as the traffic showed it.
 *
 * @example
 * ```ts
 * import type { Negotiated } from "@nbd/codec/trace";
 * const n: Negotiated = { style: "newstyle", noZeroes: true, structuredReplies: false, extendedHeaders: true,
 *   contexts: [{ id: 0, name: "base:allocation" }] };
 * console.log(n.style); // "newstyle"
 * ```
 */
export interface Negotiated {
  /** `oldstyle`, `newstyle`, or `unknown` (the capture started after the handshake). */
  readonly style: "unknown" | "oldstyle" | "newstyle";
  /** Both sides set NO_ZEROES (server handshake flag and client flag). */
  readonly noZeroes: boolean;
  /** Structured replies were negotiated. */
  readonly structuredReplies: boolean;
  /** Extended headers were negotiated. */
  readonly extendedHeaders: boolean;
  /** Metadata contexts of the last successful SET_META_CONTEXT. */
  readonly contexts: readonly { readonly id: number; readonly name: string }[];
  /** The export name the client asked for last (EXPORT_NAME, GO or INFO). */
  readonly exportName?: string;
  /** The export's size. */
  readonly size?: bigint;
  /** The export's transmission flags. */
  readonly transmissionFlags?: number;
}

/**
 * One connection's statistics.
 *
 * @example
 * ```ts
 * import type { ConnectionStats } from "@nbd/codec/trace";
 * const busiest = (cs: ConnectionStats[]) => cs.reduce((a, b) => (b.frames > a.frames ? b : a));
 * console.log(typeof busiest);
 * ```
 */
export interface ConnectionStats {
  /** The connection's number, as on its events. */
  readonly connection: number;
  /** The client's address and port (absent for raw streams). */
  readonly client?: TcpEndpoint;
  /** The server's address and port. */
  readonly server?: TcpEndpoint;
  /** First and last packet that carried NBD bytes. */
  readonly firstPacket?: number;
  /** See {@link ConnectionStats.firstPacket}. */
  readonly lastPacket?: number;
  /** Nanoseconds from the first to the last of them. */
  readonly durationNanoseconds?: number;
  /** What was negotiated (absent when the connection did not end before the report). */
  readonly negotiated?: Negotiated;
  /** Frames decoded, both directions. */
  readonly frames: number;
  /** Notices (TLS, undecodable bytes, truncated frames). */
  readonly notices: number;
  /** Requests, all commands. */
  readonly requests: number;
  /** Requests answered with an error, all commands. */
  readonly errors: number;
  /** By command, in order of first use. */
  readonly commands: readonly CommandStats[];
  /** Data bytes read: READ replies' data (simple replies and OFFSET_DATA chunks). */
  readonly bytesRead: number;
  /** Data bytes written: WRITE payloads. */
  readonly bytesWritten: number;
  /** The most requests sent and not yet answered at any moment. */
  readonly maxInFlight: number;
  /** Findings by rule (frames, notices and the TCP layer), in order of first appearance. */
  readonly findings: Readonly<Record<string, number>>;
}

/**
 * The statistics of a whole capture.
 *
 * @example
 * ```ts
 * import { TraceStats } from "@nbd/codec/trace";
 * console.log(new TraceStats().report().connections.length); // 0
 * ```
 */
export interface StatsReport {
  /** Every NBD connection, by number. */
  readonly connections: readonly ConnectionStats[];
  /** Findings about the capture file itself (not of a connection), by rule. */
  readonly captureFindings: Readonly<Record<string, number>>;
}

/** A growable list of response times. */
class Samples {
  values: Float64Array = new Float64Array(16);
  length = 0;

  add(v: number): void {
    if (this.length === this.values.length) {
      const next = new Float64Array(this.values.length * 2);
      next.set(this.values);
      this.values = next;
    }
    this.values[this.length++] = v;
  }

  summary(): ResponseTimes | undefined {
    const n = this.length;
    if (n === 0) return undefined;
    const s = this.values.slice(0, n).sort();
    const rank = (p: number): number => s[Math.max(0, Math.ceil(p * n) - 1)]!;
    return { count: n, min: s[0]!, median: rank(0.5), p90: rank(0.9), p99: rank(0.99), max: s[n - 1]! };
  }
}

class Cmd {
  requests = 0;
  replies = 0;
  errors = 0;
  readonly times: Samples = new Samples();
}

class Conn {
  client: TcpEndpoint | undefined;
  server: TcpEndpoint | undefined;
  frames = 0;
  notices = 0;
  requests = 0;
  errors = 0;
  readonly commands = new Map<number, Cmd>();
  bytesRead = 0;
  bytesWritten = 0;
  inFlight = 0;
  maxInFlight = 0;
  readonly findings = new Map<string, number>();
  exportName: string | undefined;
  end: TraceConnection | undefined;

  cmd(command: number): Cmd {
    let c = this.commands.get(command);
    if (c === undefined) {
      c = new Cmd();
      this.commands.set(command, c);
    }
    return c;
  }

  findingsOf(fs: readonly Finding[]): void {
    for (let i = 0; i < fs.length; i++) {
      const rule = fs[i]!.rule;
      this.findings.set(rule, (this.findings.get(rule) ?? 0) + 1);
    }
  }
}

function countsObject(m: ReadonlyMap<string, number>): Record<string, number> {
  const o: Record<string, number> = {};
  for (const [k, v] of m) o[k] = v;
  return o;
}

/**
 * Collects the statistics of a capture's NBD connections from the dissector's events: pass it as the
 * `CaptureDissector`'s sink (it has `event`, `traceFinding` and `connectionEnd`), then call
 * {@link TraceStats.report}. Keeps a few counters per connection and command, and one number per answered
 * request (its response time) for the percentiles.
 *
 * @example
 * ```ts
 * import { CaptureDissector, TraceStats } from "@nbd/codec/trace";
 * const stats = new TraceStats();
 * const d = new CaptureDissector(stats);
 * d.push(Uint8Array.from("d4c3b2a1020004000000000000000000ffff000001000000".match(/../g)!, (h) => parseInt(h, 16)));
 * d.end();
 * console.log(stats.report()); // { connections: [], captureFindings: {} }
 * ```
 */
export class TraceStats {
  readonly #conns = new Map<number, Conn>();
  readonly #captureFindings = new Map<string, number>();
  #last: Conn | undefined = undefined;
  #lastId = -1;

  #conn(n: number): Conn {
    if (n === this.#lastId) return this.#last!;
    let c = this.#conns.get(n);
    if (c === undefined) {
      c = new Conn();
      this.#conns.set(n, c);
    }
    this.#lastId = n;
    this.#last = c;
    return c;
  }

  /**
   * Counts one event.
   *
   * @param e an event of the dissector (or of a conversation decoder: no times then)
   */
  event(e: TraceEvent): void {
    const c = this.#conn(e.connection);
    if (c.client === undefined && e.client !== undefined) {
      c.client = e.client;
      c.server = e.server;
    }
    if (e.findings.length > 0) c.findingsOf(e.findings);
    if (e.event === "notice") {
      c.notices++;
      return;
    }
    c.frames++;
    const f = e.frame;
    switch (f.type) {
      case "request": {
        c.requests++;
        const cmd = c.cmd(f.command);
        cmd.requests++;
        if (f.command === WRITE) {
          c.bytesWritten += e.frameLength - (f.extended ? EXTENDED_REQUEST_HEADER : REQUEST_HEADER);
        }
        if (f.command !== DISC) {
          c.inFlight++;
          if (c.inFlight > c.maxInFlight) c.maxInFlight = c.inFlight;
        }
        return;
      }
      case "simple-reply":
      case "reply-chunk": {
        const r = e.request;
        if (r === undefined) return;
        const cmd = c.cmd(r.command);
        let done: boolean;
        let error: boolean;
        if (f.type === "simple-reply") {
          done = true;
          error = f.error !== 0;
          if (r.command === READ && !error) c.bytesRead += e.frameLength - SIMPLE_REPLY_HEADER;
        } else {
          done = (f.flags & DONE) !== 0;
          error = f.payload.kind === "error";
          if (f.payload.kind === "offset-data") {
            c.bytesRead += e.frameLength - (f.extended ? 32 : 20) - 8;
          }
        }
        if (error) {
          cmd.errors++;
          c.errors++;
        }
        if (done) {
          cmd.replies++;
          if (c.inFlight > 0) c.inFlight--;
          const t = e.responseNanoseconds;
          if (t !== undefined) cmd.times.add(t);
        }
        return;
      }
      case "option-request": {
        const d = f.data;
        if (d.kind === "export-name" || d.kind === "info-request") c.exportName = d.name;
        return;
      }
    }
  }

  /**
   * Counts a finding of the capture or of the TCP layer.
   *
   * @param f the finding
   * @param connection its NBD connection, or `undefined` for the capture as a whole
   */
  traceFinding(f: TraceFinding, connection: number | undefined): void {
    const m = connection === undefined ? this.#captureFindings : this.#conn(connection).findings;
    m.set(f.rule, (m.get(f.rule) ?? 0) + 1);
  }

  /**
   * Takes a connection's summary when it ends (negotiated state, first and last packet).
   *
   * @param info what the dissector knows of the connection
   */
  connectionEnd(info: TraceConnection): void {
    const c = this.#conn(info.connection);
    c.end = info;
    c.client ??= info.client;
    c.server ??= info.server;
  }

  /** The statistics so far (call after the dissector's `end()` for complete ones). */
  report(): StatsReport {
    const connections: ConnectionStats[] = [];
    const numbers = [...this.#conns.keys()].sort((a, b) => a - b);
    for (const n of numbers) {
      const c = this.#conns.get(n)!;
      const end = c.end;
      const commands: CommandStats[] = [];
      for (const [command, x] of c.commands) {
        const times = x.times.summary();
        commands.push({
          command: codeName("command", command),
          requests: x.requests,
          replies: x.replies,
          errors: x.errors,
          ...(times === undefined ? {} : { responseTimes: times }),
        });
      }
      let negotiated: Negotiated | undefined;
      if (end !== undefined) {
        const s = end.state;
        negotiated = {
          style: s.style,
          noZeroes: s.style === "newstyle" && ((s.handshakeFlags ?? 0) & NO_ZEROES) !== 0 &&
            ((s.clientFlags ?? 0) & C_NO_ZEROES) !== 0,
          structuredReplies: s.structuredReplies,
          extendedHeaders: s.extendedHeaders,
          contexts: [...s.contexts].sort(([a], [b]) => a - b).map(([id, name]) => ({ id, name })),
          ...(c.exportName === undefined ? {} : { exportName: c.exportName }),
          ...(s.exportSize === undefined ? {} : { size: s.exportSize }),
          ...(s.transmissionFlags === undefined ? {} : { transmissionFlags: s.transmissionFlags }),
        };
      }
      const timed = end?.firstPacket !== undefined;
      connections.push({
        connection: n,
        ...(c.client === undefined ? {} : { client: c.client }),
        ...(c.server === undefined ? {} : { server: c.server }),
        ...(timed
          ? {
            firstPacket: end!.firstPacket!,
            lastPacket: end!.lastPacket!,
            durationNanoseconds: (end!.lastSeconds! - end!.firstSeconds!) * 1e9 +
              (end!.lastNanoseconds! - end!.firstNanoseconds!),
          }
          : {}),
        ...(negotiated === undefined ? {} : { negotiated }),
        frames: c.frames,
        notices: c.notices,
        requests: c.requests,
        errors: c.errors,
        commands,
        bytesRead: c.bytesRead,
        bytesWritten: c.bytesWritten,
        maxInFlight: c.maxInFlight,
        findings: countsObject(c.findings),
      });
    }
    return { connections, captureFindings: countsObject(this.#captureFindings) };
  }
}

/** A duration in nanoseconds as seconds with 9 digits. */
function seconds(ns: number): string {
  const neg = ns < 0;
  const a = Math.round(neg ? -ns : ns);
  const r = a % 1e9;
  return (neg ? "-" : "") + String((a - r) / 1e9) + "." + String(r).padStart(9, "0");
}

function endpoint(e: TcpEndpoint | undefined, fallback: string): string {
  if (e === undefined) return fallback;
  return (e.address.includes(":") ? `[${e.address}]` : e.address) + ":" + e.port;
}

/**
 * A statistics report as JSON: 64-bit values (the export size) as decimal strings, times as decimal strings
 * of seconds with 9 digits (`durationSeconds`, and `min`, `median`, `p90`, `p99`, `max` of each command's
 * `responseTimes`), endpoints as `address:port`, flags as arrays of names.
 *
 * @example
 * ```ts
 * import { statsJson } from "@nbd/codec/trace";
 * console.log(JSON.stringify(statsJson({ connections: [], captureFindings: {} })));
 * // {"connections":[],"captureFindings":{}}
 * ```
 */
export function statsJson(report: StatsReport): JsonObject {
  const connections: JsonValue[] = report.connections.map((c) => {
    const o: JsonObject = { connection: c.connection };
    if (c.client !== undefined) o.client = endpoint(c.client, "");
    if (c.server !== undefined) o.server = endpoint(c.server, "");
    if (c.firstPacket !== undefined) o.firstPacket = c.firstPacket;
    if (c.lastPacket !== undefined) o.lastPacket = c.lastPacket;
    if (c.durationNanoseconds !== undefined) o.durationSeconds = seconds(c.durationNanoseconds);
    const n = c.negotiated;
    if (n !== undefined) {
      const j: JsonObject = {
        style: n.style,
        noZeroes: n.noZeroes,
        structuredReplies: n.structuredReplies,
        extendedHeaders: n.extendedHeaders,
        contexts: n.contexts.map((x) => ({ id: x.id, name: x.name })),
      };
      if (n.exportName !== undefined) j.exportName = n.exportName;
      if (n.size !== undefined) j.size = String(n.size);
      if (n.transmissionFlags !== undefined) {
        j.transmissionFlags = flagNames("transmissionFlag", n.transmissionFlags);
      }
      o.negotiated = j;
    }
    o.frames = c.frames;
    o.notices = c.notices;
    o.requests = c.requests;
    o.errors = c.errors;
    o.bytesRead = c.bytesRead;
    o.bytesWritten = c.bytesWritten;
    o.maxInFlight = c.maxInFlight;
    o.commands = c.commands.map((x) => {
      const j: JsonObject = {
        command: x.command,
        requests: x.requests,
        replies: x.replies,
        errors: x.errors,
      };
      const t = x.responseTimes;
      if (t !== undefined) {
        j.responseTimes = {
          count: t.count,
          min: seconds(t.min),
          median: seconds(t.median),
          p90: seconds(t.p90),
          p99: seconds(t.p99),
          max: seconds(t.max),
        };
      }
      return j;
    });
    o.findings = { ...c.findings };
    return o;
  });
  return { connections, captureFindings: { ...report.captureFindings } };
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}

function padLeft(s: string, n: number): string {
  return s.length >= n ? s : " ".repeat(n - s.length) + s;
}

/**
 * A statistics report as text: one block per connection, with a response-time table (seconds) per command.
 *
 * @example
 * ```ts
 * import { statsText } from "@nbd/codec/trace";
 * console.log(statsText({ connections: [], captureFindings: {} })); // "No NBD connection found.\n"
 * ```
 */
export function statsText(report: StatsReport): string {
  if (report.connections.length === 0) return "No NBD connection found.\n";
  let out = "";
  for (const c of report.connections) {
    out += `Connection ${c.connection}: ${endpoint(c.client, "client")} → ${endpoint(c.server, "server")}\n`;
    if (c.firstPacket !== undefined) {
      out += `    Packets: ${c.firstPacket} to ${c.lastPacket}, duration ${
        seconds(c.durationNanoseconds ?? 0)
      } s\n`;
    }
    const n = c.negotiated;
    if (n !== undefined) {
      const what = [
        n.style,
        ...(n.noZeroes ? ["NO_ZEROES"] : []),
        ...(n.extendedHeaders ? ["extended headers"] : n.structuredReplies ? ["structured replies"] : []),
      ];
      out += `    Negotiated: ${what.join(", ")}\n`;
      if (n.exportName !== undefined || n.size !== undefined) {
        const flags = n.transmissionFlags === undefined
          ? ""
          : `, flags 0x${n.transmissionFlags.toString(16).padStart(4, "0")} (${
            flagNames("transmissionFlag", n.transmissionFlags).join(", ")
          })`;
        out +=
          `    Export: ${n.exportName === undefined ? "(name not seen)" : JSON.stringify(n.exportName)}` +
          `${n.size === undefined ? "" : `, size ${n.size}`}${flags}\n`;
      }
      if (n.contexts.length > 0) {
        out += `    Metadata contexts: ${n.contexts.map((x) => `${x.id} ${x.name}`).join(", ")}\n`;
      }
    }
    out += `    Frames: ${c.frames}, notices ${c.notices}, requests ${c.requests}, errors ${c.errors}\n`;
    out += `    Bytes: read ${c.bytesRead}, written ${c.bytesWritten}\n`;
    out += `    Most requests in flight: ${c.maxInFlight}\n`;
    if (c.commands.length > 0) {
      out += `    Commands and response times (seconds):\n`;
      out += "        " + pad("command", 24) + padLeft("requests", 9) + padLeft("replies", 9) +
        padLeft("errors", 8) + ["min", "median", "p90", "p99", "max"].map((h) => padLeft(h, 13)).join("") +
        "\n";
      for (const x of c.commands) {
        const t = x.responseTimes;
        const times = t === undefined
          ? ["-", "-", "-", "-", "-"]
          : [t.min, t.median, t.p90, t.p99, t.max].map(seconds);
        out += "        " + pad(x.command, 24) + padLeft(String(x.requests), 9) +
          padLeft(String(x.replies), 9) +
          padLeft(String(x.errors), 8) + times.map((s) => padLeft(s, 13)).join("") + "\n";
      }
    }
    const rules = Object.entries(c.findings);
    if (rules.length > 0) out += `    Findings: ${rules.map(([r, k]) => `${r} ×${k}`).join(", ")}\n`;
    out += "\n";
  }
  const capture = Object.entries(report.captureFindings);
  if (capture.length > 0) out += `Capture findings: ${capture.map(([r, k]) => `${r} ×${k}`).join(", ")}\n`;
  return out;
}
