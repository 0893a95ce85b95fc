/**
 * The `nbd-codec` command line, as a function: {@link main} takes the arguments and an {@link CliIo}, so
 * that tests run it in-process on Node and Deno alike. `bin/nbd-codec.ts` wires it to the process.
 *
 * @module
 */
import { walkArgs } from "./_args.ts";
import { LONG_RUN_PACKETS } from "./_budget.ts";
import {
  type CaptureSniff,
  ChunkPool,
  LARGE_PACKET_BYTES,
  LARGE_READ_SIZE,
  predictsLong,
  type Prefetch,
  READ_SIZE,
  ReadAhead,
  readHead,
  readOnPool,
  sniffCapture,
} from "./_readahead.ts";
import { Buffer } from "node:buffer";
import { closeSync, fstatSync, openSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type { TraceFinding } from "../codec/capture.ts";
import { decodeConversation } from "../codec/conversation.ts";
import { isNbdDecodeError } from "../codec/errors.ts";
import type { ConversationEvent } from "../codec/events.ts";
import {
  formatEndpoint,
  formatEventJson,
  formatEventJsonLine,
  formatEventSummary,
  formatEventText,
  type HotTime,
  type JsonObject,
  NO_ROOM,
  type TextOptions,
  writeHotFrameText,
} from "../codec/format.ts";
import { CaptureDissector, NBD_PORT } from "../codec/dissector.ts";
import { compileFilter, type EventFilter, FilterSyntaxError } from "../codec/trace_filter.ts";
import { statsJson, statsText, TraceStats } from "../codec/trace_stats.ts";
import type { TraceEvent, TraceInfo, TraceInfoSlot } from "../codec/trace_event.ts";

/** Where the command line writes. */
export interface CliIo {
  /** Writes to standard output; may return a promise that settles when the text may be followed by more. */
  stdout(text: string): void | Promise<void>;
  /**
   * Writes UTF-8 bytes to standard output, when the caller can (the process entry point does): `dissect`
   * then encodes each frame's text into reused buffers as it goes, instead of building one long string per
   * flush and encoding it again. The bytes are only valid during the call: the buffer is reused once the
   * returned promise (if any) settles.
   */
  stdoutBytes?(bytes: Uint8Array): void | Promise<void>;
  /** Writes to standard error. */
  stderr(text: string): void;
}

/**
 * What the command line needs of an `AbortSignal` (one is fine): the process entry point passes a smaller
 * object of its own, which spares every run loading Node's AbortController.
 */
export interface InterruptSignal {
  /** True once interrupted. */
  readonly aborted: boolean;
  /** Calls `listener` once when interrupted. */
  addEventListener(type: "abort", listener: () => void, options: { once: true }): void;
}

/** Things the entry point knows about where it runs. */
export interface CliEnvironment {
  /** The package's root directory (holding `vectors/captures/`), to find the bundled capture. */
  readonly root?: string | undefined;
  /**
   * Standard input is a pipe, a socket or a file (not a terminal): without a capture argument, `dissect`
   * and `stats` read it. Default false (in-process callers: the bundled sample).
   */
  readonly stdinIsInput?: boolean;
  /** Aborted on SIGINT or SIGTERM: the run stops reading, writes what was decoded and returns 0. */
  readonly signal?: InterruptSignal;
  /**
   * Tuning of the runtime for long and short runs (the process entry point sets it): before the first
   * packet of a capture file of `minBytes` or more, unless its first headers predict a long run
   * (`predictsLongRun`), `cold()` (V8 then optimises later than usual); once
   * such a run turns out to be long (see {@link WARM_PACKETS}), `warm()` (back to V8's default: optimising
   * pays); once its first chunk shows that it will stay short, `short()` (V8 then optimises nothing more:
   * the run would end before compiling paid). While a run is cold, `dissect` writes its default text
   * through strings rather than the byte writer (`writeHotFrameText`), which pays only once optimised.
   */
  readonly budget?: {
    readonly minBytes: number;
    readonly cold: () => Promise<boolean>;
    readonly warm: () => void;
    readonly short?: () => void;
  };
  /**
   * Bytes per read of a capture (default 1 MiB). For tests: small reads put many read ends inside
   * records, and the output must not change.
   */
  readonly readSize?: number;
  /**
   * The first reads of the capture file named on the command line, started by the npm bin before the
   * command line was loaded (bin/_readahead.ts): a run that reads that file adopts them; another releases
   * them.
   */
  readonly prefetch?: Prefetch | undefined;
}

/**
 * A run counts as long (see {@link CliEnvironment.budget}) once it has read {@link WARM_PACKETS} packets and
 * the whole capture holds at least {@link LONG_RUN_PACKETS} (estimated from the file's size and the packets
 * per byte so far; standard input: once it has read that many). A 100 MB capture of 64 KiB segments (4 569
 * packets) stays short; one of 4 KiB frames (46 739), or any 1 GB capture, is long.
 */
export const WARM_PACKETS = 1024;

/**
 * The bundled capture `dissect` decodes when given none: qemu-io and qemu-nbd 10 with extended headers,
 * the richest one (every I/O command, OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS_EXT with base:allocation).
 */
const DEFAULT_CAPTURE = "qemu10-ext-io.pcap";

/**
 * Most chunks kept for reuse while the decoders may still hold views of them; beyond it the oldest is left
 * to the garbage collector (and a fresh chunk read into), so memory stays bounded whatever the capture.
 */
const MAX_KEPT_CHUNKS = 8;
/** Reads of a capture file under way on the thread pool while the main thread decodes. */
const READS_AHEAD = 2;
/**
 * Reads under way for `stats` once a capture file's first chunk shows large packets and a long run: its main
 * thread, which formats nothing, then decodes chunks faster than they are read, and `start.ts` gives it two
 * reading threads (`bin/_readahead.ts`, `STATS_READ_THREADS`, from the same estimate made on the file's first
 * headers). `loopback-1g`: 258.8 ms with two reads ahead, 235.7 with three, 249.3 with four (n=9;
 * bench/RESULTS.md, "Seventh pass").
 */
export const STATS_READS_AHEAD = 3;
/** Captures larger than this get progress lines on standard error. */
const PROGRESS_THRESHOLD = 50 * 1000 * 1000;
/** Output is written in pieces of about this many characters (text mode) or exactly this many bytes. */
const FLUSH_SIZE = 64 * 1024;

const USAGE = `Usage:
  nbd-codec dissect [CAPTURE | -] [--port N] [--json | --summary] [--time MODE] [--filter EXPR]
                    [--count N] [--strict]
  nbd-codec dissect --c2s CLIENT.bin --s2c SERVER.bin [--json | --summary] [--filter EXPR] [--count N]
                    [--strict]
  nbd-codec stats [CAPTURE | -] [--port N] [--json]
  nbd-codec vectors [--out DIR] | --check FILE [--json]
  nbd-codec conform server URI | client --port N | list   (see nbd-codec conform --help)
  nbd-codec --help

Decodes every NBD (Network Block Device) frame of a capture and prints each one with its fields.

Commands:
  dissect           Decode CAPTURE, a pcap or pcapng file: every NBD connection, found by its TCP port
                    (10809, or --port) or by its first bytes (a server greeting starting with NBDMAGIC, a
                    client's IHAVEOPT or request magic). Each frame shows its packet number, time and, for
                    replies, its request's packet and the time since it. "-" reads the capture from
                    standard input (tcpdump -U -w - ... | nbd-codec dissect -), and so does no CAPTURE when
                    standard input is not a terminal: each packet's frames are written as soon as it is
                    read, and Ctrl-C (SIGINT) or SIGTERM ends the run after writing what was decoded.
                    Without CAPTURE or input, the sample capture bundled in vectors/captures/ (qemu 10,
                    extended headers).
  stats             Per NBD connection of CAPTURE: endpoints, duration, what was negotiated, commands,
                    errors, bytes read and written, the most requests in flight, response times per command
                    (count, min, median, p90, p99, max) and findings by rule.

Options:
  --port N          The NBD server port (default 10809).
  --c2s FILE        Client-to-server bytes of one connection (raw stream); needs --s2c, excludes CAPTURE.
  --s2c FILE        Server-to-client bytes of the same connection.
  --json            Print one JSON object per frame (JSON Lines) instead of text; see docs/dissect.md.
                    With stats: one JSON object for the whole report.
  --summary         One line per frame: packet, time, endpoints, command or kind and main fields.
  --time MODE       How times are shown: relative (default: seconds since the capture's first packet),
                    absolute (UTC date and time), delta (seconds since the previous frame shown).
  --filter EXPR     Show only frames whose JSON fields match EXPR, e.g.
                    'command == NBD_CMD_WRITE and responseTime > 0.001'; see docs/dissect.md.
  --count N         Stop after N frames shown.
  --strict          Exit with status 1 when any spec violation was found (all frames are still printed).
  -h, --help        Show this help.

Exit status: 0 decoding completed (findings are allowed; also after SIGINT or SIGTERM), 1 --strict met a
violation, 2 bad arguments (a bad --filter expression too) or unreadable input.
`;

class UsageError extends Error {}
class InputError extends Error {}

/** What the arguments of `dissect` and `stats` ask for ({@link parseDissect}). */
export interface DissectArgs {
  capture: string | undefined;
  c2s: string | undefined;
  s2c: string | undefined;
  port: number;
  json: boolean;
  strict: boolean;
  summary: boolean;
  time: "relative" | "absolute" | "delta";
  filter: EventFilter | undefined;
  count: number | undefined;
}

/** A --filter expression that does not parse: the message shows the expression and points at the error. */
class FilterError extends Error {}

/** The arguments of `dissect` or `stats` (after the command), or "help". Exported for tests. */
export function parseDissect(args: readonly string[], command: "dissect" | "stats"): DissectArgs | "help" {
  const out: DissectArgs = {
    capture: undefined,
    c2s: undefined,
    s2c: undefined,
    port: NBD_PORT,
    json: false,
    strict: false,
    summary: false,
    time: "relative",
    filter: undefined,
    count: undefined,
  };
  const dissectOnly = (a: string): void => {
    if (command !== "dissect") throw new UsageError(`${a} applies to dissect, not to ${command}`);
  };
  let timeGiven = false;
  let portGiven = false;
  for (const arg of walkArgs(args, (m) => new UsageError(m))) {
    const a = arg.name;
    const takeValue = arg.value;
    const noValue = arg.noValue;
    switch (a) {
      case "-h":
      case "--help":
        return "help";
      case "--json":
        noValue();
        out.json = true;
        break;
      case "--strict":
        noValue();
        dissectOnly(a);
        out.strict = true;
        break;
      case "--summary":
        noValue();
        dissectOnly(a);
        out.summary = true;
        break;
      case "--time": {
        dissectOnly(a);
        const v = takeValue();
        if (v !== "relative" && v !== "absolute" && v !== "delta") {
          throw new UsageError(`--time ${v} is not one of relative, absolute, delta`);
        }
        out.time = v;
        timeGiven = true;
        break;
      }
      case "--count": {
        dissectOnly(a);
        const v = takeValue();
        const n = Number(v);
        if (!/^[0-9]+$/.test(v) || n < 1 || !Number.isSafeInteger(n)) {
          throw new UsageError(`--count ${v} is not a positive number`);
        }
        out.count = n;
        break;
      }
      case "--filter": {
        dissectOnly(a);
        const v = takeValue();
        try {
          out.filter = compileFilter(v);
        } catch (e) {
          if (!(e instanceof FilterSyntaxError)) throw e;
          throw new FilterError(
            `--filter: ${e.message} at column ${e.column}\n    ${v}\n    ${" ".repeat(e.column - 1)}^`,
          );
        }
        break;
      }
      case "--port": {
        const v = takeValue();
        const n = Number(v);
        if (!/^[0-9]+$/.test(v) || n < 1 || n > 65535) {
          throw new UsageError(`--port ${v} is not a port (1-65535)`);
        }
        out.port = n;
        portGiven = true;
        break;
      }
      case "--c2s":
        dissectOnly(a);
        out.c2s = takeValue();
        break;
      case "--s2c":
        dissectOnly(a);
        out.s2c = takeValue();
        break;
      default:
        if (a.startsWith("-") && a !== "-") throw new UsageError(`unknown option ${a}`);
        if (out.capture !== undefined) {
          throw new UsageError(`more than one capture given (${out.capture}, ${a})`);
        }
        out.capture = a;
    }
  }
  if ((out.c2s === undefined) !== (out.s2c === undefined)) {
    throw new UsageError(out.c2s === undefined ? "--s2c needs --c2s" : "--c2s needs --s2c");
  }
  if (out.c2s !== undefined && out.capture !== undefined) {
    throw new UsageError("give either a capture or --c2s/--s2c, not both");
  }
  if (out.c2s !== undefined && portGiven) {
    throw new UsageError("--port applies to captures, not to --c2s/--s2c");
  }
  if (out.c2s !== undefined && timeGiven) {
    throw new UsageError("--time applies to captures, not to --c2s/--s2c (raw streams have no times)");
  }
  if (out.json && out.summary) throw new UsageError("give either --json or --summary, not both");
  return out;
}

/**
 * The bundled sample capture: in `vectors/captures/` of the package root (else of the working
 * directory), {@link DEFAULT_CAPTURE}, else another qemu extended-headers capture, else the largest.
 */
export function bundledCapture(root: string | undefined): string | undefined {
  const dirs = [root, process.cwd()].filter((d): d is string => d !== undefined)
    .map((d) => join(d, "vectors", "captures"));
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => /\.pcap(ng)?$/.test(n)).sort();
    } catch {
      continue;
    }
    if (names.length === 0) continue;
    const preferred = names.find((n) => n === DEFAULT_CAPTURE) ?? names.find((n) => /qemu.*ext/.test(n));
    if (preferred !== undefined) return join(dir, preferred);
    let best = names[0]!;
    let bestSize = -1;
    for (const n of names) {
      const size = statSync(join(dir, n)).size;
      if (size > bestSize) [best, bestSize] = [n, size];
    }
    return join(dir, best);
  }
  return undefined;
}

function describeError(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Counts violations for --strict and remembers the first. */
class Violations {
  count = 0;
  first: string | undefined = undefined;

  note(where: string, rule: string, code: string): void {
    this.count++;
    if (this.first === undefined) this.first = `${code} (rule ${rule}) ${where}`;
  }

  event(e: ConversationEvent): void {
    const silent = e.event === "frame" || e.notice === "tls";
    if (e.findings.length === 0 && silent) return;
    const where = e.event === "frame"
      ? `in connection ${e.connection} ${e.direction} frame at offset ${e.frameOffset}`
      : `in connection ${e.connection} ${e.direction} at offset ${e.streamOffset}`;
    for (const f of e.findings) this.note(where, f.rule, f.code);
    if (e.event === "notice" && !silent && e.findings.length === 0) this.note(where, e.notice, e.notice);
  }
}

/** Buffers output and writes it in pieces, waiting when the writer asks to. */
interface Output {
  /** Adds text to write. */
  add(text: string): void;
  /** Adds the text of a request or simple reply and a blank line when it can write it as bytes. */
  addHot(
    e: ConversationEvent,
    n: number,
    time: HotTime | undefined,
    info: Readonly<TraceInfoSlot> | undefined,
  ): boolean;
  /** Whether a flush is due (about {@link FLUSH_SIZE} or more waits). */
  readonly full: boolean;
  /** Writes everything added so far. */
  flush(): Promise<void>;
}

/** Text mode, for writers of strings: pending text is one concatenation (V8 ropes), not an array to join. */
class TextOutput implements Output {
  #text = "";
  readonly #io: CliIo;

  constructor(io: CliIo) {
    this.#io = io;
  }

  add(text: string): void {
    this.#text += text;
  }

  addHot(): boolean {
    return false;
  }

  get full(): boolean {
    return this.#text.length >= FLUSH_SIZE;
  }

  async flush(): Promise<void> {
    if (this.#text.length === 0) return;
    const text = this.#text;
    this.#text = "";
    await this.#io.stdout(text);
  }
}

const UTF8 = new TextEncoder();

/** A Buffer's native UTF-8 writer: what `Buffer#write` calls after checking its arguments. */
type Utf8Write = (text: string, offset: number, length: number) => number;

/**
 * Writes `text` as UTF-8 into `buffer` at `offset` (at most `length` bytes, whole characters only) and
 * returns the bytes written: through the buffer's own `utf8Write` where it has one (Node and Deno do),
 * which skips `Buffer#write`'s argument checks, one of the costs of every frame while the code is cold.
 */
function writeUtf8(buffer: Buffer, text: string, offset: number, length: number): number {
  const native = (buffer as unknown as { utf8Write?: Utf8Write }).utf8Write;
  return native === undefined
    ? buffer.write(text, offset, length)
    : native.call(buffer, text, offset, length);
}

/**
 * Byte mode, for writers of bytes: each piece of text is encoded into a reused buffer of `size` bytes
 * ({@link FLUSH_SIZE} in the command line) as it is added, so no long string is kept (to be copied by the
 * garbage collector and flattened again for encoding) and no fresh buffer is allocated per write. Buffers
 * filled between two flushes wait in a list and go back to a pool when written. Exported for tests.
 */
export class ByteOutput implements Output {
  readonly #write: (bytes: Uint8Array) => void | Promise<void>;
  readonly #size: number;
  /** Filled buffers (each a view of its used part) waiting for the next flush. */
  readonly #filled: Uint8Array[] = [];
  /** Written buffers, ready for reuse. */
  readonly #pool: Buffer[] = [];
  #buffer: Buffer;
  #used = 0;

  /**
   * @param write receives each filled buffer (a view, valid until the returned promise settles)
   * @param size the size of each buffer, at least 4 bytes (one character)
   */
  constructor(write: (bytes: Uint8Array) => void | Promise<void>, size: number = FLUSH_SIZE) {
    this.#write = write;
    this.#size = size;
    this.#buffer = Buffer.allocUnsafeSlow(size);
  }

  add(text: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit: when that fits, one native write (a few times
    // faster than TextEncoder.encodeInto for short strings, and no view to allocate) does it all.
    if (text.length * 3 <= this.#size - this.#used) {
      this.#used += writeUtf8(this.#buffer, text, this.#used, this.#size - this.#used);
      return;
    }
    let rest = text;
    for (;;) {
      const r = UTF8.encodeInto(rest, this.#buffer.subarray(this.#used));
      this.#used += r.written;
      if (r.read === rest.length) return;
      // Full: encodeInto stops before a character that does not fit, never inside one.
      rest = rest.slice(r.read);
      this.#next();
    }
  }

  /**
   * Writes the text of a request or simple reply (and a blank line) straight into the buffer as bytes,
   * without building a string (in a fresh buffer when the current one may lack room); false for events the
   * byte writer leaves to {@link formatEventText}.
   */
  addHot(e: ConversationEvent, n: number, time?: HotTime, info?: Readonly<TraceInfoSlot>): boolean {
    let p = writeHotFrameText(e, n, this.#buffer, this.#used, time, info);
    if (p === NO_ROOM && this.#used > 0) {
      this.#next();
      p = writeHotFrameText(e, n, this.#buffer, 0, time, info);
    }
    if (p < 0) return false;
    this.#used = p;
    return true;
  }

  #next(): void {
    this.#filled.push(this.#buffer.subarray(0, this.#used));
    this.#buffer = this.#pool.pop() ?? Buffer.allocUnsafeSlow(this.#size);
    this.#used = 0;
  }

  get full(): boolean {
    return this.#filled.length > 0;
  }

  async flush(): Promise<void> {
    if (this.#used > 0) this.#next();
    for (const b of this.#filled) {
      await this.#write(b);
      this.#pool.push(Buffer.from(b.buffer, b.byteOffset, this.#size));
    }
    this.#filled.length = 0;
  }
}

function traceFindingJson(f: TraceFinding, connection: number | undefined): JsonObject {
  const o: JsonObject = { kind: "capture" };
  if (connection !== undefined) o.connection = connection;
  if (f.direction !== undefined) o.direction = f.direction;
  // `packet` is the 0-based index it always was (the schema only gains keys); `packetNumber` counts from 1,
  // as frames' `packet` and Wireshark do.
  if (f.packet !== undefined) {
    o.packet = f.packet;
    o.packetNumber = f.packet + 1;
  }
  if (f.streamOffset !== undefined) o.streamOffset = f.streamOffset;
  o.findings = [{ code: f.code, offset: f.offset, rule: f.rule, message: f.message }];
  return o;
}

function traceFindingText(f: TraceFinding, connection: number | undefined): string {
  const where = [
    connection === undefined ? "capture" : `connection ${connection}`,
    ...(f.direction === undefined ? [] : [f.direction]),
    ...(f.packet === undefined ? [] : [`packet ${f.packet + 1}`]),
  ].join(", ");
  return `Capture finding: ${where}\n    [Finding] ${f.code} at ${f.offset}: ${f.message} (rule ${f.rule})`;
}

/** Resolves when `signal` aborts (never without one). */
function aborted(signal: InterruptSignal | undefined): Promise<"aborted"> {
  return new Promise((resolve) => {
    if (signal === undefined) return;
    if (signal.aborted) resolve("aborted");
    else signal.addEventListener("abort", () => resolve("aborted"), { once: true });
  });
}

/** What a caller of {@link readCapture} adds to reading. */
interface ReadOptions {
  /** Says when to stop early (then the dissector is not ended); never by default. */
  readonly stop?: () => boolean;
  /** Called after each read (`live`: standard input), where output is flushed. */
  readonly afterRead?: (live: boolean) => Promise<void>;
  /**
   * Told `false` when the run starts cold (see {@link CliEnvironment.budget}), `true` when it turns out long
   * (from the first chunk on, when its packets per byte say so).
   */
  readonly onWarm?: (warm: boolean) => void;
  /** Reads kept under way once the first chunk shows large packets and a long run (default {@link READS_AHEAD}). */
  readonly longReadsAhead?: number;
}

/**
 * Reads a capture (file or standard input) through `dissector`, with `options` ({@link ReadOptions}). Stops
 * early when `options.stop()` says so (then without ending the dissector) or when `signal` aborts (then the
 * dissector is ended: incomplete frames become notices).
 *
 * A capture file is read {@link READS_AHEAD} chunks ahead on libuv's thread pool (bin/_readahead.ts):
 * while the dissector decodes chunk N and its frames are written, the kernel copies the next chunks on the
 * other core (with one read ahead, both threads wait for each other's wake-up at every chunk: on
 * `loopback-1g` that cost more than the overlap saved); `options.longReadsAhead` once its first chunk shows
 * large packets and a long run (`stats`: {@link STATS_READS_AHEAD}). Standard input is read only after the
 * frames of what came before were written (live output), and a read waits for SIGINT and SIGTERM too.
 */
async function readCapture(
  file: string,
  stdin: boolean,
  dissector: CaptureDissector,
  io: CliIo,
  env: CliEnvironment,
  options: ReadOptions = {},
): Promise<void> {
  const { signal, budget } = env;
  const { stop, afterRead, onWarm, longReadsAhead = READS_AHEAD } = options;
  const readSize = env.readSize ?? READ_SIZE;
  const name = stdin ? "standard input" : file;
  let fd: number;
  let size = 0;
  let regular = false;
  // A capture file whose first reads are under way (env.prefetch): its descriptor and reads are adopted.
  const head = readHead(readSize);
  const started = stdin ? undefined : env.prefetch?.take(file, head);
  // Reads of another file (an argument taken for the capture that was not): closed once they end.
  if (started === undefined) await env.prefetch?.release();
  try {
    fd = stdin ? 0 : started !== undefined ? env.prefetch!.fd : openSync(file, "r");
    if (!stdin) {
      const stat = fstatSync(fd);
      size = stat.size;
      regular = stat.isFile();
    }
  } catch (e) {
    throw new InputError(`cannot read ${file}: ${describeError(e)}`);
  }
  // A record cut by the end of a read is not copied by the capture reader (pushComplete): its first bytes
  // (`tail` of them, at the end of `last`) are moved in front of the next read's bytes instead. Standard
  // input reads after the tail, at the front of the chunk; a file's next read is under way before the tail
  // is known, so its chunks keep `head` bytes free in front of what is read into them. A longer tail is
  // given to the capture reader, which copies the record while it arrives.
  const chunks = new ChunkPool(dissector, stdin ? readSize : head + readSize, MAX_KEPT_CHUNKS);
  let ahead: ReadAhead | undefined;
  if (!stdin) {
    ahead = new ReadAhead(fd, chunks, head, readSize, READS_AHEAD, regular, started);
    // The first reads are under way while the budget's module loads.
    ahead.fill();
  }
  const interrupted = aborted(signal);
  let warm: (() => void) | undefined;
  /** Whether the run is long, once `onWarm` was told that it starts cold. */
  let longRun: boolean | undefined;
  try {
    /** Called once, when the first chunk with packets shows a cold run that will stay short. */
    let short: (() => void) | undefined;
    if (
      budget !== undefined && !stdin && size >= budget.minBytes &&
      !predictsLongRun(started !== undefined ? env.prefetch!.sniff : undefined, fd, size) &&
      await budget.cold()
    ) {
      warm = budget.warm;
      short = budget.short;
      longRun = false;
      onWarm?.(false);
    }
    const progress = size > PROGRESS_THRESHOLD;
    let done = 0;
    let nextReport = 0.1;
    let last: Uint8Array | undefined;
    let tail = 0;
    let end = true;
    // Reads grow after the first chunk when its packets turn out large (not when a test chose the size).
    let grow = ahead !== undefined && env.readSize === undefined;
    for (;;) {
      if (stop?.() === true) {
        end = false;
        break;
      }
      if (signal?.aborted) break;
      let chunk: Uint8Array;
      // Where the bytes to push start in `chunk`, and where the bytes just read start.
      let from: number;
      let at: number;
      let got: number;
      if (ahead !== undefined) {
        const r = await ahead.next();
        if (r instanceof Error) throw new InputError(`cannot read ${name}: ${describeError(r)}`);
        chunk = r.chunk;
        got = r.got;
        at = head;
        from = head - tail;
        // `last` is kept or free, but no read into it has started yet.
        if (tail > 0) chunk.set(last!.subarray(last!.length - tail), from);
        // From here on `last` may be read into: the next reads are under way while this chunk is decoded.
        if (got > 0) ahead.fill();
      } else {
        chunk = chunks.take();
        from = 0;
        at = tail;
        if (tail > 0) {
          // `last` is kept or free but not yet overwritten (it may be `chunk` itself: set() copies as
          // memmove). From here on the tail lives at the front of `chunk`.
          chunk.set(last!.subarray(last!.length - tail), 0);
          last = chunk.subarray(0, tail);
        }
        try {
          // Standard input is live: read on the thread pool, so that SIGINT and SIGTERM are seen while
          // waiting (the chunk being read into is abandoned then).
          const r = await Promise.race([readOnPool(fd, chunk, tail, readSize - tail), interrupted]);
          if (r === "aborted") break;
          if (typeof r !== "number") throw r;
          got = r;
        } catch (e) {
          // A non-blocking pipe on standard input: wait for more (the tail is copied again).
          if ((e as { code?: unknown }).code === "EAGAIN") {
            chunks.giveBack(chunk);
            await Promise.race([new Promise((resolve) => setTimeout(resolve, 10)), interrupted]);
            continue;
          }
          throw new InputError(`cannot read ${name}: ${describeError(e)}`);
        }
      }
      const length = at + got;
      try {
        if (got === 0) {
          // The capture ends inside a record: the reader keeps it, and end() reports it.
          if (tail > 0) dissector.push(chunk.subarray(from, at));
          break;
        }
        const filled = from === 0 && length === chunk.length ? chunk : chunk.subarray(from, length);
        dissector.pushComplete(filled);
        tail = dissector.unconsumed;
        if (tail > head) {
          // A record too large to move around cheaply: the reader copies it while it arrives.
          dissector.push(filled.subarray(filled.length - tail));
          tail = 0;
        }
        last = filled;
      } catch (e) {
        if (isNbdDecodeError(e)) throw new InputError(`${name} is not a readable capture: ${e.message}`);
        throw e;
      }
      chunks.keep(chunk);
      done += got;
      const packets = dissector.packets;
      // Whether the run is long: the packets so far, or what they predict for the whole file.
      const long = (stdin ? packets : (size / done) * packets) >= LONG_RUN_PACKETS;
      if (grow && packets > 0) {
        // Large packets (loopback segments of 64 KiB): little work per byte, so the thread pool's
        // wake-ups at every read cost more than larger reads.
        grow = false;
        if (done / packets >= LARGE_PACKET_BYTES) {
          ahead!.resize(LARGE_READ_SIZE);
          if (long) ahead!.deepen(longReadsAhead);
        }
      }
      if (warm !== undefined && packets >= WARM_PACKETS && long) {
        warm();
        warm = undefined;
      }
      if (longRun === false && packets > 0 && long) {
        // Known from the first chunk on (warming the budget waits for more packets, to be sure).
        longRun = true;
        onWarm?.(true);
      }
      if (short !== undefined && packets > 0) {
        // A file (cold runs are files) that its first chunk predicts short: loopback-100m (4 569 packets)
        // spent 4% of its instructions compiling optimised code it hardly ran (bench/RESULTS.md). Should
        // the estimate turn out wrong, warm() above still comes.
        if (longRun === false) short();
        short = undefined;
      }
      await afterRead?.(stdin);
      if (progress && done >= nextReport * size) {
        io.stderr(
          `nbd-codec: ${Math.floor((100 * done) / size)}% of ${file} (${Math.round(done / 1e6)} of ${
            Math.round(size / 1e6)
          } MB)\n`,
        );
        while (nextReport * size <= done) nextReport += 0.1;
      }
    }
    if (end) {
      try {
        dissector.end();
      } catch (e) {
        if (isNbdDecodeError(e)) throw new InputError(`${name} is not a readable capture: ${e.message}`);
        throw e;
      }
    }
  } finally {
    // Reads still under way write into their chunks and need the descriptor: let them end first.
    if (ahead !== undefined) await ahead.settle();
    if (!stdin) closeSync(fd);
  }
}

/**
 * Whether a capture file's first headers (`sniff`, from the prefetch, else read here: {@link sniffCapture})
 * predict a long run ({@link LONG_RUN_PACKETS} packets or more). Such a run starts without its cold phase:
 * the larger interrupt budget only delayed the optimising compiler that it needs (`small-100m` 170.7 ->
 * 163.3 ms, `loopback-1g` 4% faster, `small-1g` unchanged; `mixed-100m`, whose many kinds of frames profit
 * from riper type feedback, 4-7% slower at 10 times tshark's speed: bench/RESULTS.md, "Sixth pass").
 */
function predictsLongRun(sniff: CaptureSniff | undefined, fd: number, size: number): boolean {
  try {
    return predictsLong(sniff ?? sniffCapture(fd, size));
  } catch {
    // Unreadable here: the run's own reads will say why.
    return false;
  }
}

/** The capture to read: the argument, else standard input when it is not a terminal, else the sample. */
function captureOf(a: DissectArgs, env: CliEnvironment): { file: string; stdin: boolean } {
  if (a.capture === "-") return { file: "-", stdin: true };
  if (a.capture !== undefined) return { file: a.capture, stdin: false };
  if (env.stdinIsInput === true) return { file: "-", stdin: true };
  const file = bundledCapture(env.root);
  if (file === undefined) {
    throw new InputError("no capture given and no bundled capture found in vectors/captures/");
  }
  return { file, stdin: false };
}

async function dissect(a: DissectArgs, io: CliIo, env: CliEnvironment): Promise<number> {
  const write = io.stdoutBytes;
  const out: Output = write === undefined ? new TextOutput(io) : new ByteOutput((b) => write.call(io, b));
  const violations = new Violations();
  let n = 0;
  let shown = 0;
  const count = a.count ?? Infinity;
  const filter = a.filter;
  const text = !a.json && !a.summary;
  /** Connections whose endpoints were shown (text mode). */
  const introduced: boolean[] = [];
  // The default text reads each event's packets and times from the dissector's reused slot (detached), and
  // so does formatEventText (its `trace` argument): the events keep the decoder's shapes, no field is
  // copied onto them (loopback-100m: 2.5% fewer instructions than attaching the fields, bench/RESULTS.md).
  const detached = text && filter === undefined;
  const dissector = new CaptureDissector(
    { event: (e) => onEvent(e), traceFinding: (f, c) => onTrace(f, c) },
    {
      port: a.port,
      detached,
    },
  );
  const info = detached ? dissector.info : undefined;
  // The byte writer for requests and simple replies (`addHot`), unless the run is cold: until V8 optimises
  // it, writing bytes one JavaScript operation at a time costs more than building the same text as a
  // string with V8's native string and number builtins (loopback-100m, bench/RESULTS.md).
  let byteWriter = true;
  // Time display: relative to the capture's first packet (known before any event), to the previous frame
  // shown (delta), or absolute.
  let hot: HotTime | undefined;
  let textOptions: TextOptions | undefined;
  const timeOptions = (e: TraceInfo | Readonly<TraceInfoSlot>): void => {
    if (a.time === "absolute") {
      if (hot === undefined) {
        hot = { originSeconds: 0, originNanoseconds: 0, absolute: true };
        textOptions = { time: "absolute" };
      }
    } else if (a.time === "delta") {
      if (e.seconds === undefined) return;
      if (hot === undefined) {
        hot = { originSeconds: e.seconds, originNanoseconds: e.nanoseconds!, absolute: false };
      }
      textOptions = hot;
    } else if (hot === undefined) {
      const origin = dissector.origin;
      hot = {
        originSeconds: origin?.seconds ?? 0,
        originNanoseconds: origin?.nanoseconds ?? 0,
        absolute: false,
      };
      textOptions = hot;
    }
  };
  const onEvent = (e: TraceEvent): void => {
    violations.event(e);
    n++;
    if (shown >= count) return;
    let json: JsonObject | undefined;
    if (filter !== undefined) {
      json = formatEventJson(e);
      if (!filter(json)) return;
    }
    shown++;
    if (a.json) {
      out.add((json === undefined ? formatEventJsonLine(e) : JSON.stringify(json)) + "\n");
      return;
    }
    const t: TraceInfo | Readonly<TraceInfoSlot> = info ?? e;
    if (t.packet !== undefined && (hot === undefined || a.time === "delta")) timeOptions(t);
    if (a.summary) out.add(formatEventSummary(e, textOptions) + "\n");
    else {
      if (t.client !== undefined && introduced[e.connection] !== true) {
        introduced[e.connection] = true;
        out.add(`Connection ${e.connection}: ${formatEndpoint(t.client)} → ${formatEndpoint(t.server!)}\n\n`);
      }
      if (!byteWriter || !out.addHot(e, n, hot, info)) {
        out.add(formatEventText(e, n, textOptions, info) + "\n\n");
      }
    }
    if (a.time === "delta" && t.seconds !== undefined) {
      hot = { originSeconds: t.seconds, originNanoseconds: t.nanoseconds!, absolute: false };
      textOptions = hot;
    }
  };
  const onTrace = (f: TraceFinding, connection: number | undefined): void => {
    violations.note(
      connection === undefined ? "in the capture" : `in connection ${connection}`,
      f.rule,
      f.code,
    );
    if (filter !== undefined || shown >= count || a.summary) return;
    out.add(
      a.json
        ? JSON.stringify(traceFindingJson(f, connection)) + "\n"
        : traceFindingText(f, connection) + "\n\n",
    );
  };

  if (a.c2s !== undefined && a.s2c !== undefined) {
    let c2s: Uint8Array;
    let s2c: Uint8Array;
    try {
      c2s = new Uint8Array(readFileSync(a.c2s));
      s2c = new Uint8Array(readFileSync(a.s2c));
    } catch (e) {
      throw new InputError(`cannot read ${describeError(e)}`);
    }
    for (const e of decodeConversation(c2s, s2c, { strict: false, payloadViews: true })) {
      onEvent(e);
      if (shown >= count) break;
      if (out.full) await out.flush();
    }
  } else {
    const { file, stdin } = captureOf(a, env);
    await readCapture(file, stdin, dissector, io, env, {
      stop: () => shown >= count,
      afterRead: async (live) => {
        // Live input: every packet's frames are out before the next read.
        if (live || out.full) await out.flush();
      },
      onWarm: (warm) => {
        byteWriter = warm;
      },
    });
    if (dissector.connections === 0 && text) {
      out.add(
        `No NBD connection found in ${
          stdin ? "standard input" : file
        } (port ${a.port}, or NBD first bytes).\n`,
      );
    }
  }
  await out.flush();
  if (a.strict && violations.count > 0) {
    io.stderr(
      `nbd-codec: --strict: ${violations.count} spec violation${
        violations.count === 1 ? "" : "s"
      }; first: ${violations.first}\n`,
    );
    return 1;
  }
  return 0;
}

async function stats(a: DissectArgs, io: CliIo, env: CliEnvironment): Promise<number> {
  const { file, stdin } = captureOf(a, env);
  const collected = new TraceStats();
  const dissector = new CaptureDissector(collected, { port: a.port });
  await readCapture(file, stdin, dissector, io, env, { longReadsAhead: STATS_READS_AHEAD });
  const report = collected.report();
  await io.stdout(a.json ? JSON.stringify(statsJson(report)) + "\n" : statsText(report));
  return 0;
}

/**
 * Runs the command line with `args` (without the program name) and returns the exit status: 0 decoding
 * completed, 1 `--strict` met a violation, 2 bad arguments or unreadable input (with a one-line message
 * on standard error).
 */
export async function main(args: readonly string[], io: CliIo, env: CliEnvironment = {}): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined) {
      io.stderr(`nbd-codec: no command given (try nbd-codec --help)\n`);
      return 2;
    }
    if (command === "-h" || command === "--help" || command === "help") {
      await io.stdout(USAGE);
      return 0;
    }
    if (command === "vectors") return await (await import("./vectors.ts")).vectorsCommand(rest, io, env);
    // Loaded on demand, as vectors: conform needs node:net and node:child_process, about 4 ms of every
    // start when loaded with the bundle.
    if (command === "conform") return await (await import("./conform.ts")).conformMain(rest, io);
    if (command !== "dissect" && command !== "stats") throw new UsageError(`unknown command ${command}`);
    const parsed = parseDissect(rest, command);
    if (parsed === "help") {
      await io.stdout(USAGE);
      return 0;
    }
    return command === "stats" ? await stats(parsed, io, env) : await dissect(parsed, io, env);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`nbd-codec: ${e.message} (try nbd-codec --help)\n`);
      return 2;
    }
    if (e instanceof InputError || e instanceof FilterError) {
      io.stderr(`nbd-codec: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
