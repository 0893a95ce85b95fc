/**
 * `nbd-codec conform server URI` and `nbd-codec conform client`: sockets, time bounds and output around the
 * pure conformance code in `codec/conform*.ts`.
 *
 * @module
 */
import { walkArgs } from "./_args.ts";
import * as fs from "node:fs";
import * as net from "node:net";
import {
  type ConformCase,
  type ConformConnection,
  conformExitCode,
  type ConformResult,
  ConformSetupError,
  ConformTimeoutError,
  formatConformJson,
  formatConformJunit,
  formatConformTable,
} from "../codec/conform.ts";
import { runServerCases, SERVER_CASES, type ServerTarget, type WriteRange } from "../codec/conform_server.ts";
import { type ConformIo, ConformUsageError } from "./_conform_io.ts";
import { runConformClient } from "./conform_client.ts";

export { type ConformIo, ConformUsageError };

export const CONFORM_USAGE = `Usage:
  nbd-codec conform server URI [--allow-writes RANGE] [--json] [--junit FILE] [--timeout MS]
                               [--only ID[,ID...]] [--allow-remote]
  nbd-codec conform client --port N [--profile NAME] [--expect-output FILE] [--json] [--junit FILE]
                           [-- COMMAND ARG...]
  nbd-codec conform list [--json]

Checks a live NBD server (conform server) or client (conform client) against the NBD spec. Every case has
a stable id, the spec clause it checks, a level (MUST, SHOULD, MAY) and an outcome: PASS, FAIL (a MUST is
broken), WARN (a SHOULD is broken) or SKIP (the case does not apply, with the reason).

URI               nbd://127.0.0.1:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH. Loopback only unless
                  --allow-remote.
--allow-writes R  Run the cases that write, only inside R: OFFSET:LENGTH (bytes; K, M, G suffixes) or "all"
                  (the whole export). Without it those cases are skipped. Writing destroys data there.
--json            One JSON object per case and line, instead of the table.
--junit FILE      Also write the results as JUnit XML to FILE.
--timeout MS      Longest wait for any answer of the peer (default 5000); a case never hangs.
--only IDS        Run only these cases (ids or areas such as "read" or "opt.unknown").
conform list      Print the case catalogue.

conform client serves a 1 MiB export "disk" on 127.0.0.1:N (0: a free port) and runs COMMAND, with {port}
and {uri} in its arguments replaced (nbd://127.0.0.1:PORT/disk); without COMMAND it serves until the
clients that connected have gone. --expect-output FILE compares FILE (written by the command) with the
export. --profile: default, reorder, split-reads, no-extended, no-structured, min-block, zeroes, errors,
many-exports (see docs/conformance.md).

Exit status: 0 every MUST passed, 1 a MUST failed, 2 bad arguments or the peer could not be reached.
`;

/** A parsed nbd URI. */
export interface NbdAddress {
  readonly host?: string;
  readonly port?: number;
  readonly socket?: string;
  readonly exportName: string;
}

/** Parses `nbd://HOST[:PORT]/EXPORT` and `nbd+unix:///EXPORT?socket=PATH`. */
export function parseNbdUri(uri: string): NbdAddress {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new ConformUsageError(`not a URI: ${uri}`);
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ""));
  if (u.protocol === "nbd:") {
    const host = u.hostname.replace(/^\[|\]$/g, "");
    if (host === "") throw new ConformUsageError(`no host in ${uri}`);
    return { host, port: u.port === "" ? 10809 : Number(u.port), exportName };
  }
  if (u.protocol === "nbd+unix:") {
    const socket = u.searchParams.get("socket");
    if (!socket) throw new ConformUsageError(`nbd+unix URI without ?socket=PATH: ${uri}`);
    return { socket, exportName };
  }
  throw new ConformUsageError(`unsupported URI scheme ${u.protocol} (nbd: or nbd+unix:)`);
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}

/** Parses a size with an optional K, M, G (binary) suffix. */
function parseSize(s: string): bigint {
  const m = /^(\d+)([KMGT]?)$/i.exec(s);
  if (!m) throw new ConformUsageError(`not a size: ${s}`);
  const mul = {
    "": 1n,
    K: 1n << 10n,
    M: 1n << 20n,
    G: 1n << 30n,
    T: 1n << 40n,
  }[m[2]!.toUpperCase() as "" | "K"]!;
  return BigInt(m[1]!) * mul;
}

/** Parses the --allow-writes range. */
export function parseWriteRange(s: string): WriteRange {
  if (s === "all") return { offset: 0n };
  const m = /^([^:]+):([^:]+)$/.exec(s);
  if (!m) throw new ConformUsageError(`--allow-writes takes OFFSET:LENGTH or "all", not ${s}`);
  return { offset: parseSize(m[1]!), length: parseSize(m[2]!) };
}

/**
 * A socket as a {@link ConformConnection}: bytes queue up as they arrive; `receive` waits at most
 * `timeoutMs` for the next ones (then rejects with {@link ConformTimeoutError}).
 */
export class SocketConnection implements ConformConnection {
  readonly #socket: net.Socket;
  readonly #timeoutMs: number;
  #queue: Uint8Array[] = [];
  #ended = false;
  #wake: (() => void) | undefined;
  /** No connection lives longer than this (a server trickling bytes cannot stretch a case). */
  readonly #deadline: number;

  constructor(socket: net.Socket, timeoutMs: number) {
    this.#socket = socket;
    this.#timeoutMs = timeoutMs;
    this.#deadline = Date.now() + 20 * timeoutMs;
    socket.on("data", (d: Uint8Array) => {
      this.#queue.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      this.#wake?.();
    });
    const end = (): void => {
      this.#ended = true;
      this.#wake?.();
    };
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", end);
  }

  /** Connects to a TCP or Unix socket address. */
  static connect(a: NbdAddress, timeoutMs: number): Promise<SocketConnection> {
    return new Promise((resolve, reject) => {
      const s = a.socket !== undefined ? net.connect(a.socket) : net.connect(a.port!, a.host!);
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error(`connect timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      s.once("connect", () => {
        clearTimeout(t);
        s.setNoDelay(true);
        resolve(new SocketConnection(s, timeoutMs));
      });
      s.once("error", (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
  }

  send(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#ended || this.#socket.destroyed) {
        reject(new Error("connection closed by the peer"));
        return;
      }
      this.#socket.write(bytes, (e) => (e ? reject(e) : resolve()));
    });
  }

  async receive(): Promise<Uint8Array | null> {
    if (this.#queue.length > 0) return this.#queue.shift()!;
    if (this.#ended) return null;
    const left = this.#deadline - Date.now();
    if (left <= 0) throw new ConformTimeoutError(`the case took longer than ${20 * this.#timeoutMs} ms`);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        this.#wake = undefined;
        reject(new ConformTimeoutError(`no answer within ${Math.min(this.#timeoutMs, left)} ms`));
      }, Math.min(this.#timeoutMs, left));
      this.#wake = () => {
        clearTimeout(t);
        this.#wake = undefined;
        resolve();
      };
    });
    if (this.#queue.length > 0) return this.#queue.shift()!;
    return null;
  }

  close(): void {
    this.#socket.destroy();
  }
}

interface Common {
  json: boolean;
  junit: string | undefined;
  timeoutMs: number;
  only: string[] | undefined;
}

async function report(
  results: readonly ConformResult[],
  cases: readonly ConformCase[],
  suite: string,
  o: Common,
  io: ConformIo,
): Promise<number> {
  await io.stdout(o.json ? formatConformJson(results, cases) : formatConformTable(results));
  if (o.junit !== undefined) fs.writeFileSync(o.junit, formatConformJunit(results, cases, suite));
  return conformExitCode(results);
}

function catalogue(json: boolean): string {
  if (json) return SERVER_CASES.map(({ run: _run, ...c }) => JSON.stringify(c)).join("\n") + "\n";
  return SERVER_CASES.map((c) => `${c.id}  ${c.level}  ${c.title}${c.writes ? " (writes)" : ""}`).join("\n") +
    "\n";
}

/** Runs `nbd-codec conform ...` (args after "conform"); returns the exit status. */
export async function conformMain(args: readonly string[], io: ConformIo): Promise<number> {
  try {
    return await conformCommand(args, io);
  } catch (e) {
    if (e instanceof ConformUsageError) {
      io.stderr(`nbd-codec conform: ${e.message} (try nbd-codec conform --help)\n`);
      return 2;
    }
    if (e instanceof ConformSetupError) {
      io.stderr(`nbd-codec conform: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

async function conformCommand(args: readonly string[], io: ConformIo): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "-h" || sub === "--help" || sub === "help") {
    await io.stdout(CONFORM_USAGE);
    return sub === undefined ? 2 : 0;
  }
  const o: Common = { json: false, junit: undefined, timeoutMs: 5000, only: undefined };
  let uri: string | undefined;
  let writes: WriteRange | undefined;
  let allowRemote = false;
  let port: number | undefined;
  let profile: string | undefined;
  let command: string[] | undefined;
  let expectOutput: string | undefined;
  for (const arg of walkArgs(rest, (m) => new ConformUsageError(m))) {
    const a = arg.name;
    const take = arg.value;
    switch (a) {
      case "-h":
      case "--help":
        await io.stdout(CONFORM_USAGE);
        return 0;
      case "--json":
        o.json = true;
        break;
      case "--junit":
        o.junit = take();
        break;
      case "--timeout": {
        const t = Number(take());
        if (!Number.isInteger(t) || t <= 0) {
          throw new ConformUsageError("--timeout takes a positive number of ms");
        }
        o.timeoutMs = t;
        break;
      }
      case "--only":
        o.only = take().split(",").filter((x) => x !== "");
        break;
      case "--allow-writes":
        writes = parseWriteRange(take());
        break;
      case "--allow-remote":
        allowRemote = true;
        break;
      case "--port": {
        const p = Number(take());
        if (!Number.isInteger(p) || p < 0 || p > 65535) throw new ConformUsageError("--port takes 0..65535");
        port = p;
        break;
      }
      case "--profile":
        profile = take();
        break;
      case "--expect-output":
        expectOutput = take();
        break;
      case "--":
        command = arg.rest();
        break;
      default:
        if (a.startsWith("-")) throw new ConformUsageError(`unknown option ${a}`);
        if (uri !== undefined) throw new ConformUsageError(`unexpected argument ${a}`);
        uri = a;
    }
  }
  if (sub === "list") {
    await io.stdout(catalogue(o.json));
    return 0;
  }
  if (sub === "server") {
    if (uri === undefined) throw new ConformUsageError("conform server needs a URI");
    const addr = parseNbdUri(uri);
    if (addr.host !== undefined && !isLoopback(addr.host) && !allowRemote) {
      throw new ConformUsageError(`${addr.host} is not a loopback address (add --allow-remote to test it)`);
    }
    const target: ServerTarget = {
      connect: () => SocketConnection.connect(addr, o.timeoutMs),
      exportName: addr.exportName,
      ...(writes ? { writeRange: writes } : {}),
    };
    const results = await runServerCases(target, o.only ? { only: o.only } : {});
    if (results.length === 0) throw new ConformUsageError(`--only ${o.only?.join(",")} selects no case`);
    return await report(results, SERVER_CASES, "conform-server", o, io);
  }
  if (sub === "client") {
    return await runConformClient({ port, profile, command, expectOutput, common: o }, io, report);
  }
  throw new ConformUsageError(`unknown conform command ${sub} (server, client or list)`);
}
