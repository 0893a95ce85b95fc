/**
 * A small NBD client over `node:net`, built on the codec's sans-I/O {@link ClientSession}: the session
 * negotiates (extended headers, then structured replies, then simple replies; GO, falling back to
 * EXPORT_NAME; oldstyle servers too), checks each command against what the server advertised, and assembles
 * the replies. This file only moves bytes and turns events into promises, then lists exports and metadata
 * contexts, and reads, writes, zeroes, trims, flushes, caches and maps an export. Runs on Deno and Node:
 *
 * ```sh
 * npx deno run -A examples/client.ts --port 10809 list
 * npx deno run -A examples/client.ts --port 10809 --name disk write 0 68656c6c6f
 * npx vite-node examples/client.ts -- --port 10809 read 0 5
 * npx deno run -A examples/client.ts --port 10809 --context base:allocation map
 * npx deno run -A examples/client.ts --port 10809 selftest
 * ```
 *
 * Options: `--host` (default 127.0.0.1), `--port` (required), `--name` (default: the empty name, the
 * server's default export), `--no-extended-headers`, `--no-structured-replies`, `--context NAME`
 * (repeatable; default `base:allocation`), `--json`, `--verbose`.
 * Commands: `list`, `info`, `read OFF LEN [FILE]`, `write OFF HEX|@FILE`, `zero OFF LEN [--no-hole]
 * [--fast]`, `trim OFF LEN`, `cache OFF LEN`, `flush`, `map [OFF LEN]`, `selftest`.
 *
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import process from "node:process";
import {
  type ClientEvent,
  ClientSession,
  CommandFlag,
  type CommandResult,
  type ExportDetails,
  type Finding,
  InitFlag,
  nameOf,
  Option,
  OptionReply,
  type OptionResult,
  type ReplyMode,
  StateFlag,
  TransmissionFlag,
} from "../mod.ts";

export type { ReplyMode };

/** The peer closed the connection. */
export class ConnectionClosed extends Error {
  constructor() {
    super("the server closed the connection");
  }
}

/** The server answered an option with an error reply (`NBD_REP_ERR_*`). */
export class NbdOptionError extends Error {
  readonly option: number;
  readonly reply: number;
  constructor(option: number, reply: number, message: string) {
    const rep = nameOf("optionReply", reply) ?? `0x${reply.toString(16)}`;
    super(
      `${nameOf("option", option) ?? `option ${option}`} failed: ${rep}${
        message === "" ? "" : ` (${message})`
      }`,
    );
    this.option = option;
    this.reply = reply;
  }
}

/** The server failed a command (`NBD_E*` in a simple reply or an error chunk). */
export class NbdCommandError extends Error {
  readonly command: number;
  readonly errno: number;
  constructor(command: number, errno: number, message: string) {
    const err = nameOf("error", errno) ?? `error ${errno}`;
    super(
      `${nameOf("command", command) ?? `command ${command}`} failed: ${err}${
        message === "" ? "" : ` (${message})`
      }`,
    );
    this.command = command;
    this.errno = errno;
  }
}

/** What INFO or GO told us about an export. */
export type ExportInfo = ExportDetails;

/** One extent of a metadata context. */
export interface Extent {
  offset: bigint;
  length: bigint;
  status: bigint;
}

/** Connection settings. */
export interface ClientOptions {
  readonly host?: string;
  readonly port: number;
  /** Export name; "" (the default) asks for the server's default export. */
  readonly name?: string;
  /** Try NBD_OPT_EXTENDED_HEADERS first (default true). */
  readonly extendedHeaders?: boolean;
  /** Try NBD_OPT_STRUCTURED_REPLY (default true). */
  readonly structuredReplies?: boolean;
  /** Metadata contexts to select (default `["base:allocation"]`). */
  readonly metaContexts?: readonly string[];
  /** Check commands against what the server advertised (default true; false to test a server's errors). */
  readonly checkRequests?: boolean;
  /** Connection timeout in milliseconds (default 10 s). */
  readonly timeoutMs?: number;
  readonly log?: (line: string) => void;
}

/** Per-command choices; `check: false` sends it even if the server did not advertise what it needs. */
interface Checked {
  check?: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// The protocol part, one page: the session's events turned into promises (94 lines, to "transport and
// conveniences"). The session negotiates, checks and assembles; each option and command method below is one
// session call wrapped in #option or #command.

type Waiter<T> = { resolve: (v: T) => void; reject: (e: Error) => void };

/** An NBD client connection. */
export class NbdClient {
  readonly #socket: net.Socket;
  readonly #s: ClientSession;
  readonly #log: (line: string) => void;
  readonly #options = new Map<number, Waiter<OptionResult>>();
  readonly #replies = new Map<bigint, Waiter<CommandResult>>();
  #opened: Waiter<void> | undefined;
  #auto = false;
  #fatal: Error | undefined;
  /** Every option tried during negotiation and its final reply name (for reports). */
  readonly negotiation: string[] = [];

  private constructor(socket: net.Socket, session: ClientSession, log: (line: string) => void) {
    this.#socket = socket;
    this.#s = session;
    this.#log = log;
    socket.on("data", (chunk: Uint8Array) => {
      try {
        for (const e of this.#s.receive(chunk)) this.#event(e);
      } catch (e) {
        this.#failAll(e as Error);
      }
      this.#flush();
    });
    socket.on("close", () => {
      for (const e of this.#s.end()) this.#event(e);
      this.#failAll(new ConnectionClosed());
    });
    socket.on("error", () => {});
  }

  #event(e: ClientEvent): void {
    if (e.type === "option") {
      const name = nameOf("option", e.option) ?? `option ${e.option}`;
      const how = e.ok
        ? (e.option === Option.EXPORT_NAME ? "accepted" : "ACK")
        : nameOf("optionReply", e.reply);
      this.negotiation.push(`${name}: ${how ?? `0x${(e.ok ? 0 : e.reply).toString(16)}`}`);
      this.#log(`${name}: ${how}`);
      const w = this.#options.get(e.id);
      this.#options.delete(e.id);
      if (e.ok) w?.resolve(e.result);
      else w?.reject(new NbdOptionError(e.option, e.reply, e.message));
    } else if (e.type === "reply") {
      const w = this.#replies.get(e.result.cookie);
      this.#replies.delete(e.result.cookie);
      const r = e.result;
      if (r.ok) w?.resolve(r);
      else w?.reject(new NbdCommandError(r.command, r.error, r.message));
    } else if (
      e.type === "ready" || (e.type === "greeting" && !this.#auto && this.#s.state.phase === "options")
    ) {
      this.#opened?.resolve();
    } else if (e.type === "negotiation-failed") {
      this.#opened?.reject(new NbdOptionError(e.option, e.reply, e.message));
    } else if (e.type === "finding") this.#log(`finding: ${e.finding.rule}: ${e.finding.message}`);
  }

  #failAll(e: Error): void {
    this.#fatal ??= e;
    this.#opened?.reject(e);
    for (const w of [...this.#options.values(), ...this.#replies.values()]) w.reject(e);
    this.#options.clear();
    this.#replies.clear();
    this.#socket.destroy();
  }

  #flush(): void {
    const out = this.#s.takeOutput();
    if (out.length === 0 || this.#socket.destroyed) return;
    this.#socket.cork();
    for (const b of out) this.#socket.write(b);
    this.#socket.uncork();
  }

  #option(id: number): Promise<OptionResult> {
    return new Promise((resolve, reject) => {
      this.#options.set(id, { resolve, reject });
      this.#flush();
    });
  }

  #command(send: () => bigint): Promise<CommandResult> {
    if (this.#fatal !== undefined) return Promise.reject(this.#fatal);
    return new Promise((resolve, reject) => {
      this.#replies.set(send(), { resolve, reject });
      this.#flush();
    });
  }

  // -------------------------------------------------------------------- transport and conveniences

  static async #start(options: ClientOptions, auto: boolean): Promise<NbdClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: options.host ?? "127.0.0.1", port: options.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error("connect timed out"));
      }, options.timeoutMs ?? 10_000);
      s.once("connect", () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    socket.setNoDelay(true);
    const session = new ClientSession({
      negotiateReplies: auto,
      extendedHeaders: options.extendedHeaders ?? true,
      structuredReplies: options.structuredReplies ?? true,
      go: auto ? { name: options.name ?? "", contexts: options.metaContexts ?? ["base:allocation"] } : false,
      checkRequests: options.checkRequests ?? true,
    });
    const client = new NbdClient(socket, session, options.log ?? (() => {}));
    client.#auto = auto;
    try {
      await new Promise<void>((resolve, reject) => (client.#opened = { resolve, reject }));
    } catch (e) {
      if (e instanceof NbdOptionError && e.reply === OptionReply.ERR_TLS_REQD) await client.abort();
      socket.destroy();
      throw e;
    } finally {
      client.#opened = undefined;
    }
    return client;
  }

  /** Opens a TCP connection, reads the greeting, sends the client flags; stops in option haggling. */
  static connect(options: ClientOptions): Promise<NbdClient> {
    return NbdClient.#start(options, false);
  }

  /**
   * Connects and lets the session negotiate everything: extended headers, else structured replies; the
   * metadata contexts; then GO (or EXPORT_NAME for servers without GO). Ready for commands.
   */
  static open(options: ClientOptions): Promise<NbdClient> {
    return NbdClient.#start(options, true);
  }

  /** Findings: the server's spec violations. */
  get findings(): readonly Finding[] {
    return this.#s.findings;
  }
  /** `oldstyle`, `newstyle` (not fixed) or `fixed-newstyle`. */
  get handshake(): string {
    return this.#s.state.handshake;
  }
  /** Whether both sides agreed to drop the 124 zero bytes. */
  get noZeroes(): boolean {
    return this.#s.state.noZeroes;
  }
  get mode(): ReplyMode {
    return this.#s.state.replyMode;
  }
  /** Selected metadata contexts: id → name. */
  get contexts(): ReadonlyMap<number, string> {
    return this.#s.state.contexts;
  }
  /** The export in use, once in transmission. */
  get export(): ExportInfo | undefined {
    return this.#s.state.export;
  }

  /** Extended headers if wanted and offered, else structured replies, else simple replies. */
  async negotiateReplies(extended: boolean, structured: boolean): Promise<ReplyMode> {
    for (const [want, mode] of [[extended, "extended"], [structured, "structured"]] as const) {
      if (!want || this.mode !== "simple") continue;
      await this.#option(this.#s.requestReplies(mode)).catch((e: unknown) => {
        if (!(e instanceof NbdOptionError) || e.reply === OptionReply.ERR_TLS_REQD) throw e;
      });
    }
    return this.mode;
  }

  /** NBD_OPT_LIST: the exports (name and description). */
  async list(): Promise<{ name: string; description: string }[]> {
    const r = await this.#option(this.#s.list());
    return r.kind === "exports" ? r.exports.map((e) => ({ ...e })) : [];
  }

  /** NBD_OPT_LIST_META_CONTEXT: the context names matching the queries (all with no query). */
  async listMetaContexts(name: string, queries: readonly string[] = []): Promise<string[]> {
    const r = await this.#option(this.#s.listContexts(name, queries));
    return r.kind === "contexts" ? r.contexts.map((x) => x.name) : [];
  }

  /** NBD_OPT_SET_META_CONTEXT: selects contexts; returns id → name. */
  async setMetaContexts(name: string, queries: readonly string[]): Promise<ReadonlyMap<number, string>> {
    await this.#option(this.#s.setContexts(name, queries));
    return this.contexts;
  }

  /** NBD_OPT_INFO: what GO would say, without leaving option haggling. */
  async info(name: string): Promise<ExportInfo> {
    const r = await this.#option(this.#s.info(name));
    if (r.kind !== "export") throw new Error("INFO succeeded without details");
    return r.export;
  }

  /** NBD_OPT_GO: selects the export and enters transmission. */
  async go(name: string): Promise<ExportInfo> {
    await this.#option(this.#s.go(name));
    return this.export!;
  }

  /** NBD_OPT_ABORT, then close (tolerating a server that closes without its ACK: 2 s at most). */
  async abort(): Promise<void> {
    try {
      if (this.#s.state.phase !== "options") return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)));
      await Promise.race([this.#option(this.#s.abort()).then(() => {}, () => {}), timeout]);
      clearTimeout(timer);
    } finally {
      this.#socket.destroy();
    }
  }

  /** Whether the server advertised a transmission flag. */
  can(flag: number): boolean {
    return ((this.export?.transmissionFlags ?? 0) & flag) !== 0;
  }

  async read(
    offset: bigint | number,
    length: number,
    options: { df?: boolean; fua?: boolean } & Checked = {},
  ): Promise<Uint8Array> {
    const flags = (options.df ? CommandFlag.DF : 0) | (options.fua ? CommandFlag.FUA : 0);
    const r = await this.#command(() => this.#s.read(offset, length, { flags, ...check(options) }));
    return r.data!;
  }

  async write(
    offset: bigint | number,
    data: Uint8Array,
    options: { fua?: boolean } & Checked = {},
  ): Promise<void> {
    const flags = options.fua ? CommandFlag.FUA : 0;
    await this.#command(() => this.#s.write(offset, data, { flags, ...check(options) }));
  }

  async zero(
    offset: bigint | number,
    length: bigint | number,
    options: { noHole?: boolean; fastZero?: boolean; fua?: boolean } & Checked = {},
  ): Promise<void> {
    const flags = (options.noHole ? CommandFlag.NO_HOLE : 0) |
      (options.fastZero ? CommandFlag.FAST_ZERO : 0) |
      (options.fua ? CommandFlag.FUA : 0);
    await this.#command(() => this.#s.writeZeroes(offset, length, { flags, ...check(options) }));
  }

  async trim(
    offset: bigint | number,
    length: bigint | number,
    options: { fua?: boolean } & Checked = {},
  ): Promise<void> {
    const flags = options.fua ? CommandFlag.FUA : 0;
    await this.#command(() => this.#s.trim(offset, length, { flags, ...check(options) }));
  }

  async cache(offset: bigint | number, length: bigint | number): Promise<void> {
    await this.#command(() => this.#s.cache(offset, length));
  }

  async flush(): Promise<void> {
    await this.#command(() => this.#s.flush());
  }

  /** Sends any command unchecked (for error tests: unknown commands, bad flags). */
  async raw(command: number, flags: number, offset: bigint, length: bigint): Promise<void> {
    await this.#command(() => this.#s.command(command, offset, length, { flags, check: false }));
  }

  /**
   * NBD_CMD_BLOCK_STATUS over [offset, offset+length): extents per context name. `contextIds` uses the
   * payload form (extended headers and NBD_FLAG_BLOCK_STATUS_PAYLOAD) to ask about those contexts only.
   */
  async blockStatus(
    offset: bigint | number,
    length: bigint | number,
    options: { reqOne?: boolean; contextIds?: readonly number[] } & Checked = {},
  ): Promise<Map<string, Extent[]>> {
    const flags = options.reqOne ? CommandFlag.REQ_ONE : 0;
    const ids = options.contextIds === undefined ? {} : { contextIds: options.contextIds };
    const r = await this.#command(() =>
      this.#s.blockStatus(offset, length, { flags, ...ids, ...check(options) })
    );
    const out = new Map<string, Extent[]>();
    for (const [id, list] of r.extents ?? []) {
      out.set(
        this.contexts.get(id) ?? `#${id}`,
        list.map((e) => ({ offset: e.offset, length: e.length, status: e.status })),
      );
    }
    return out;
  }

  /** Maps a range (default: the whole export) for every selected context; adjacent equal extents merged. */
  async map(from = 0n, length?: bigint): Promise<Map<string, Extent[]>> {
    const size = this.export?.size ?? 0n;
    const end = length === undefined ? size : from + length;
    const out = new Map<string, Extent[]>();
    for (const name of this.contexts.values()) out.set(name, []);
    const step = this.mode === "extended" ? 1n << 40n : 0x8000_0000n;
    let pos = from;
    while (pos < end) {
      const want = end - pos < step ? end - pos : step;
      const got = await this.blockStatus(pos, want);
      // Contexts may cover different lengths: advance by the shortest.
      let advance = want;
      for (const list of got.values()) {
        const covered = list.reduce((a, e) => a + e.length, 0n);
        if (covered < advance) advance = covered;
      }
      if (advance <= 0n) throw new Error("block status made no progress");
      for (const [name, list] of got) {
        const acc = out.get(name) ?? [];
        out.set(name, acc);
        for (const e of list) {
          if (e.offset >= pos + advance) break;
          const len = e.offset + e.length > pos + advance ? pos + advance - e.offset : e.length;
          const last = acc[acc.length - 1];
          if (last !== undefined && last.status === e.status && last.offset + last.length === e.offset) {
            last.length += len;
          } else acc.push({ offset: e.offset, length: len, status: e.status });
        }
      }
      pos += advance;
    }
    return out;
  }

  /** NBD_CMD_DISC and close. */
  async disconnect(): Promise<void> {
    if (this.#s.state.phase === "transmission" && this.#fatal === undefined && !this.#socket.destroyed) {
      this.#s.disconnect();
      this.#flush();
      this.#socket.end();
    }
    await new Promise<void>((resolve) => {
      if (this.#socket.destroyed) return resolve();
      const t = setTimeout(() => {
        this.#socket.destroy();
        resolve();
      }, 2000);
      this.#socket.once("close", () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** Closes without a goodbye. */
  destroy(): void {
    this.#socket.destroy();
  }
}

function check(o: Checked): { check?: boolean } {
  return o.check === undefined ? {} : { check: o.check };
}

// ---------------------------------------------------------------------------------------------------------
// Self test: every command, verified

/** A deterministic pseudo-random pattern. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function isZero(a: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false;
  return true;
}

/** Result of {@link selftest}: one line per check, and whether all passed. */
export interface SelftestResult {
  ok: boolean;
  mode: ReplyMode;
  checks: { name: string; ok: boolean; detail?: string }[];
}

/**
 * Runs every command the server advertises on an open client and checks the data read back. Writes only
 * inside the first 4 MiB (or the export, if smaller). Read-only exports get the read and error checks.
 */
export async function selftest(c: NbdClient): Promise<SelftestResult> {
  const checks: SelftestResult["checks"] = [];
  const check = async (name: string, fn: () => Promise<string | void>): Promise<void> => {
    try {
      const detail = await fn();
      checks.push(detail === undefined ? { name, ok: true } : { name, ok: true, detail });
    } catch (e) {
      checks.push({ name, ok: false, detail: (e as Error).message });
    }
  };
  const assert = (cond: boolean, message: string): void => {
    if (!cond) throw new Error(message);
  };
  const size = Number(c.export?.size ?? 0n);
  const ro = c.can(TransmissionFlag.READ_ONLY);
  const span = Math.min(size, 4 * 1024 * 1024);
  const a = pattern(Math.min(65536, span / 4), 1);
  const b = pattern(Math.min(131072, span / 4), 2);
  const bAt = span / 2;

  await check("read the start of the export", async () => {
    const d = await c.read(0, Math.min(4096, size));
    assert(d.length === Math.min(4096, size), "short read");
  });
  if (!ro) {
    await check("write two patterns and read them back", async () => {
      await c.write(0, a);
      await c.write(bAt, b, { fua: c.can(TransmissionFlag.SEND_FUA) });
      assert(equal(await c.read(0, a.length), a), "first pattern differs");
      assert(equal(await c.read(bAt, b.length), b), "second pattern differs");
    });
    if (c.can(TransmissionFlag.SEND_DF)) {
      await check("read with DF (one content chunk)", async () => {
        assert(equal(await c.read(bAt, b.length, { df: true }), b), "DF read differs");
      });
    }
    if (c.can(TransmissionFlag.SEND_WRITE_ZEROES)) {
      await check("write zeroes (punching) reads back zeroes", async () => {
        await c.zero(bAt, 4096);
        assert(isZero(await c.read(bAt, 4096)), "not zero");
        assert(equal(await c.read(bAt + 4096, b.length - 4096), b.subarray(4096)), "neighbour changed");
      });
      await check("write zeroes with NO_HOLE reads back zeroes", async () => {
        await c.zero(bAt + 4096, 4096, { noHole: true });
        assert(isZero(await c.read(bAt + 4096, 4096)), "not zero");
      });
      if (c.can(TransmissionFlag.SEND_FAST_ZERO)) {
        await check("write zeroes with FAST_ZERO: zeroes or ENOTSUP", async () => {
          try {
            await c.zero(bAt + 8192, 4096, { fastZero: true });
          } catch (e) {
            if (e instanceof NbdCommandError && e.errno === 95) return "ENOTSUP (not fast)";
            throw e;
          }
          assert(isZero(await c.read(bAt + 8192, 4096)), "not zero");
        });
      }
    }
    if (c.can(TransmissionFlag.SEND_TRIM)) {
      await check("trim", async () => {
        await c.trim(bAt + 65536, 65536);
        // After TRIM the contents are undefined: only the neighbours are checked.
        assert(
          equal(await c.read(bAt + 16384, 65536 - 16384), b.subarray(16384, 65536)),
          "neighbour changed",
        );
      });
    }
  } else {
    await check("write to a read-only export fails", async () => {
      try {
        await c.write(0, a, { check: false });
      } catch (e) {
        if (e instanceof NbdCommandError) return `errno ${nameOf("error", e.errno) ?? e.errno}`;
        throw e;
      }
      throw new Error("write succeeded");
    });
  }
  await check("64 pipelined requests, replies matched by cookie", async () => {
    const base = Math.floor((span * 3) / 4 / 4096) * 4096;
    const n = Math.min(64, Math.floor((span - base) / 4096));
    const blocks = Array.from({ length: n }, (_, i) => pattern(4096, 100 + i));
    if (!ro) await Promise.all(blocks.map((d, i) => c.write(base + i * 4096, d)));
    const got = await Promise.all(blocks.map((_, i) => c.read(base + i * 4096, 4096)));
    got.forEach((d, i) => assert(ro || equal(d, blocks[i]!), `block ${i} differs`));
    return `${n} writes and ${n} reads in flight`;
  });
  if (c.can(TransmissionFlag.SEND_FLUSH)) await check("flush", () => c.flush());
  if (c.can(TransmissionFlag.SEND_CACHE)) await check("cache", () => c.cache(0, Math.min(65536, size)));
  await check("read beyond the end fails and the connection survives", async () => {
    let errno = 0;
    try {
      await c.read(size - 512, 4096, { check: false });
    } catch (e) {
      if (!(e instanceof NbdCommandError)) throw e;
      errno = e.errno;
    }
    assert(errno !== 0, "out-of-range read succeeded");
    await c.read(0, 512);
    return nameOf("error", errno) ?? String(errno);
  });
  if (c.contexts.size > 0) {
    await check("map the export", async () => {
      const m = await c.map();
      const lines: string[] = [];
      for (const [name, list] of m) {
        const total = list.reduce((s, e) => s + e.length, 0n);
        assert(total === BigInt(size), `${name} covers ${total} of ${size} bytes`);
        lines.push(`${name}: ${list.length} extents`);
        if (name === "base:allocation" && !ro) {
          // Where we wrote nonzero data, ZERO must not be claimed.
          for (const e of list) {
            const overlapsA = e.offset < BigInt(a.length);
            if (overlapsA) {
              assert((Number(e.status) & StateFlag.ZERO) === 0, `ZERO claimed over data at ${e.offset}`);
            }
          }
        }
      }
      return lines.join("; ");
    });
    await check("block status with REQ_ONE returns one extent per context", async () => {
      const m = await c.blockStatus(0, Math.min(size, 1 << 20), { reqOne: true });
      assert(m.size === c.contexts.size, `${m.size} contexts answered, ${c.contexts.size} selected`);
      for (const [name, list] of m) {
        assert(list.length === 1, `${name}: ${list.length} extents`);
        assert(list[0]!.length <= BigInt(Math.min(size, 1 << 20)), `${name}: extent longer than the request`);
      }
    });
    if (c.can(TransmissionFlag.BLOCK_STATUS_PAYLOAD)) {
      await check("block status payload form selects one context", async () => {
        const [id, name] = [...c.contexts][0]!;
        const m = await c.blockStatus(0, Math.min(size, 1 << 20), { contextIds: [id] });
        assert(m.size === 1 && m.has(name), `answered: ${[...m.keys()].join(", ")}`);
      });
    }
  }
  return { ok: checks.every((x) => x.ok), mode: c.mode, checks };
}

// ---------------------------------------------------------------------------------------------------------
// Command line

function usage(): never {
  console.error(
    "usage: client.ts --port N [--host 127.0.0.1] [--name NAME] [--no-extended-headers]\n" +
      "                 [--no-structured-replies] [--context NAME]... [--json] [--verbose] COMMAND\n" +
      "commands: list | info | read OFF LEN [FILE] | write OFF HEX|@FILE | zero OFF LEN [--no-hole] [--fast]\n" +
      "          | trim OFF LEN | cache OFF LEN | flush | map [OFF LEN] | selftest",
  );
  process.exit(2);
}

function json(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v) => (typeof v === "bigint" ? (v <= 2n ** 53n ? Number(v) : v.toString()) : v),
  );
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function fromHex(s: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new Error(`not hex: ${s}`);
  return Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function describeFlags(flags: number): string {
  const names: string[] = [];
  for (const [k, v] of Object.entries(TransmissionFlag)) if ((flags & v) !== 0) names.push(k.toLowerCase());
  return names.join(" ");
}

async function main(argv: readonly string[]): Promise<number> {
  let port: number | undefined;
  let host = "127.0.0.1";
  let name = "";
  let extendedHeaders = true;
  let structuredReplies = true;
  let asJson = false;
  let verbose = false;
  const contexts: string[] = [];
  const rest: string[] = [];
  let noHole = false;
  let fast = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => argv[++i] ?? usage();
    if (a === "--") continue;
    else if (a === "--port") port = Number(value());
    else if (a === "--host") host = value();
    else if (a === "--name") name = value();
    else if (a === "--no-extended-headers") extendedHeaders = false;
    else if (a === "--no-structured-replies") structuredReplies = false;
    else if (a === "--context") contexts.push(value());
    else if (a === "--json") asJson = true;
    else if (a === "--verbose") verbose = true;
    else if (a === "--no-hole") noHole = true;
    else if (a === "--fast") fast = true;
    else if (a.startsWith("--")) usage();
    else rest.push(a);
  }
  if (port === undefined || !Number.isInteger(port)) usage();
  const [cmd, ...args] = rest;
  if (cmd === undefined) usage();
  const log = verbose ? (line: string) => console.error(`[client] ${line}`) : undefined;
  const base = { host, port, name, extendedHeaders, structuredReplies, ...(log ? { log } : {}) };
  const out = (text: string, value: unknown): void => console.log(asJson ? json(value) : text);

  if (cmd === "list" || cmd === "info") {
    const c = await NbdClient.connect(base);
    try {
      if (c.handshake !== "fixed-newstyle") {
        out(`${c.handshake} server: no option haggling`, { handshake: c.handshake, export: c.export });
        c.destroy();
        return 0;
      }
      const mode = await c.negotiateReplies(extendedHeaders, structuredReplies);
      const exports = cmd === "list" ? await c.list() : [{ name, description: "" }];
      const result: Record<string, unknown>[] = [];
      for (const e of exports) {
        const info = await c.info(e.name).catch((err: Error) => ({ error: err.message }));
        let metaContexts: string[] | { error: string } = [];
        if (mode !== "simple") {
          metaContexts = await c.listMetaContexts(e.name).catch((err: Error) => ({ error: err.message }));
        }
        result.push({ name: e.name, description: e.description, info, metaContexts });
      }
      await c.abort();
      if (asJson) console.log(json({ mode, negotiation: c.negotiation, exports: result }));
      else {
        console.log(`reply mode: ${mode}`);
        for (const r of result) {
          console.log(`export "${String(r.name)}": ${String(r.description)}`);
          const info = r.info as ExportInfo & { error?: string };
          if (info.error !== undefined) console.log(`  info: ${info.error}`);
          else {
            console.log(`  size: ${info.size}`);
            console.log(
              `  flags: 0x${info.transmissionFlags.toString(16)} ${describeFlags(info.transmissionFlags)}`,
            );
            if (info.blockSize) console.log(`  block size: ${json(info.blockSize)}`);
            if (info.initFlags !== undefined) {
              const f = info.initFlags;
              console.log(
                `  init flags: 0x${f.toString(16)}${f & InitFlag.SPARSE ? " sparse" : ""}${
                  f & InitFlag.ZERO ? " zero" : ""
                }`,
              );
            }
          }
          console.log(`  contexts: ${json(r.metaContexts)}`);
        }
      }
    } finally {
      c.destroy();
    }
    return 0;
  }

  const c = await NbdClient.open({
    ...base,
    metaContexts: contexts.length > 0 ? contexts : ["base:allocation"],
  });
  try {
    log?.(`negotiated: ${c.negotiation.join(", ")}; mode ${c.mode}`);
    const num = (i: number): number => {
      const v = Number(args[i] ?? usage());
      if (!Number.isSafeInteger(v) || v < 0) usage();
      return v;
    };
    switch (cmd) {
      case "read": {
        const data = await c.read(num(0), num(1));
        if (args[2] !== undefined) writeFileSync(args[2], data);
        else out(hex(data), { offset: num(0), data: hex(data) });
        break;
      }
      case "write": {
        const src = args[1] ?? usage();
        const data = src.startsWith("@") ? new Uint8Array(readFileSync(src.slice(1))) : fromHex(src);
        await c.write(num(0), data);
        out(`wrote ${data.length} bytes at ${num(0)}`, { written: data.length });
        break;
      }
      case "zero":
        await c.zero(num(0), num(1), { noHole, fastZero: fast });
        out(`zeroed ${num(1)} bytes at ${num(0)}`, { zeroed: num(1) });
        break;
      case "trim":
        await c.trim(num(0), num(1));
        out(`trimmed ${num(1)} bytes at ${num(0)}`, { trimmed: num(1) });
        break;
      case "cache":
        await c.cache(num(0), num(1));
        out("cached", { cached: num(1) });
        break;
      case "flush":
        await c.flush();
        out("flushed", { flushed: true });
        break;
      case "map": {
        const m = args.length >= 2 ? await c.map(BigInt(num(0)), BigInt(num(1))) : await c.map();
        if (asJson) console.log(json(Object.fromEntries(m)));
        else {
          for (const [ctx, list] of m) {
            console.log(ctx);
            for (const e of list) {
              console.log(`${String(e.offset).padStart(12)} ${String(e.length).padStart(12)} ${e.status}`);
            }
          }
        }
        break;
      }
      case "selftest": {
        const r = await selftest(c);
        if (asJson) {
          console.log(json({ ...r, negotiation: c.negotiation, findings: c.findings.map((f) => f.rule) }));
        } else {
          console.log(`mode: ${r.mode} (${c.negotiation.join(", ")})`);
          for (const x of r.checks) {
            console.log(`${x.ok ? "ok  " : "FAIL"} ${x.name}${x.detail ? `: ${x.detail}` : ""}`);
          }
          console.log(r.ok ? "selftest passed" : "selftest FAILED");
        }
        await c.disconnect();
        return r.ok ? 0 : 1;
      }
      default:
        usage();
    }
    await c.disconnect();
    return 0;
  } catch (e) {
    c.destroy();
    throw e;
  }
}

/** Deno sets `import.meta.main`; under Node (vite-node, or a bundle) the entry script is argv[1]. */
function isMain(): boolean {
  const meta = import.meta as ImportMeta & { main?: boolean };
  if (typeof meta.main === "boolean") return meta.main;
  return /vite-node|client\.(ts|js|mjs)$/.test(process.argv[1] ?? "");
}

if (isMain()) {
  // Exit once stdout is flushed (a pipe may still hold the last lines).
  const exit = (code: number): void => {
    process.stdout.write("", () => process.exit(code));
  };
  main(process.argv.slice(2)).then(exit, (e: unknown) => {
    console.error(`error: ${(e as Error).message}`);
    exit(e instanceof NbdOptionError ? 3 : 1);
  });
}
