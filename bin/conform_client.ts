/**
 * `nbd-codec conform client`: serves the in-memory export of {@link ConformPeerServer} on 127.0.0.1, runs
 * the client command given after `--` (its `{port}` and `{uri}` arguments filled in), and reports what the
 * client did wrong, its exit status and, with `--expect-output FILE`, whether the data it wrote out equals
 * the export.
 *
 * @module
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import process from "node:process";
import type { ConformCase, ConformResult } from "../codec/conform.ts";
import {
  CLIENT_CASES,
  CLIENT_PROFILE_CATALOGUE,
  type ClientConformConnection,
  createClientConnection,
  evaluateClient,
} from "../codec/conform_client.ts";
import { type ConformIo, ConformUsageError } from "./_conform_io.ts";

/** Options of `conform client`. */
export interface ClientRunOptions {
  readonly port: number | undefined;
  readonly profile: string | undefined;
  readonly command: string[] | undefined;
  readonly expectOutput?: string | undefined;
  readonly common: {
    json: boolean;
    junit: string | undefined;
    timeoutMs: number;
    only: string[] | undefined;
  };
}

type Report = (
  r: readonly ConformResult[],
  c: readonly ConformCase[],
  suite: string,
  o: ClientRunOptions["common"],
  io: ConformIo,
) => Promise<number>;

/** Longest a client command may run. */
const COMMAND_TIMEOUT_MS = 120_000;

/** Runs `conform client`; returns the exit status. */
export async function runConformClient(o: ClientRunOptions, io: ConformIo, report: Report): Promise<number> {
  const name = o.profile ?? "default";
  const profile = CLIENT_PROFILE_CATALOGUE.find((p) => p.name === name);
  if (profile === undefined) {
    throw new ConformUsageError(
      `unknown profile ${name} (${CLIENT_PROFILE_CATALOGUE.map((p) => p.name).join(", ")})`,
    );
  }
  if (o.port === undefined) {
    throw new ConformUsageError("conform client needs --port N (0 picks a free port)");
  }
  const servers: ClientConformConnection[] = [];
  let reference: Uint8Array | undefined;
  let open = 0;
  let resolveIdle: () => void = () => {};
  const idle = new Promise<void>((r) => (resolveIdle = r));
  const server = net.createServer((socket) => {
    open++;
    const s = createClientConnection(name);
    servers.push(s);
    reference ??= s.exportBytes();
    socket.setNoDelay(true);
    const flush = (): void => {
      // One write per batch: many small writes would each wait for the client's delayed ACK.
      const parts = s.take();
      if (parts.length === 1) socket.write(parts[0]!);
      else if (parts.length > 1) {
        const all = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
        let at = 0;
        for (const b of parts) {
          all.set(b, at);
          at += b.length;
        }
        socket.write(all);
      }
      if (s.closing) socket.end();
    };
    flush();
    socket.on("data", (d: Uint8Array) => {
      s.receive(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      flush();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      if (--open === 0) resolveIdle();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : o.port;
  const uri = `nbd://127.0.0.1:${port}/disk`;
  io.stderr(
    `conform client: profile ${name} (${profile.about}); listening 127.0.0.1:${port}, export "disk" (${uri})\n`,
  );
  let exitCode: number | null | undefined;
  try {
    if (o.command !== undefined && o.command.length > 0) {
      const [cmd, ...args] = o.command.map((a) =>
        a.replaceAll("{port}", String(port)).replaceAll("{uri}", uri)
      );
      exitCode = await runCommand(cmd!, args, port, io);
      // The command has exited: its connections close now (bounded wait, then judged as they are).
      if (open > 0) await Promise.race([idle, new Promise((r) => setTimeout(r, 2000))]);
    } else {
      await idle;
    }
  } finally {
    server.close();
  }
  const logs = servers.map((s) => s.log());
  let dataMatches: boolean | undefined;
  if (o.expectOutput !== undefined && reference !== undefined) {
    let got: Uint8Array;
    try {
      got = fs.readFileSync(o.expectOutput);
    } catch {
      got = new Uint8Array(0);
    }
    dataMatches = got.length === reference.length && got.every((b, i) => b === reference![i]);
  }
  const results = evaluateClient({
    connections: logs,
    ...(exitCode !== undefined ? { exitCode } : {}),
    ...(profile.expectFailure ? { expectFailure: true } : {}),
    ...(dataMatches !== undefined ? { dataMatches } : {}),
  }).filter((r) => o.common.only === undefined || o.common.only.some((x) => r.id.startsWith(x)));
  return await report(results, CLIENT_CASES, "conform-client", o.common, io);
}

function runCommand(cmd: string, args: string[], port: number, io: ConformIo): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NBD_CONFORM_PORT: String(port) },
    });
    let err = "";
    child.stdout!.on("data", () => {});
    child.stderr!.on("data", (d: Uint8Array) => {
      if (err.length < 4000) err += new TextDecoder().decode(d);
    });
    const t = setTimeout(() => child.kill("SIGKILL"), COMMAND_TIMEOUT_MS);
    child.once("error", (e) => {
      clearTimeout(t);
      io.stderr(`conform client: cannot run ${cmd}: ${e.message}\n`);
      resolve(127);
    });
    child.once("close", (code) => {
      clearTimeout(t);
      if (code !== 0 && err) {
        io.stderr(`conform client: ${cmd} exited ${code}: ${err.trim().split("\n").slice(-3).join(" | ")}\n`);
      }
      resolve(code);
    });
  });
}
