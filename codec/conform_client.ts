/**
 * `conform client`: the cases that judge a live client from what a {@link ConformPeerServer} saw of its
 * traffic (findings on every request and option, how the session ended) and from the client's own result
 * (exit status, data read back). Pure: the sockets and the child process are the caller's.
 *
 * @module
 */
import type { ConformCase, ConformResult } from "./conform.ts";
import { violatedOutcome } from "./conform.ts";
import { type ClientFinding, type ConformPeerOptions, ConformPeerServer } from "./_conform_peer.ts";

/**
 * What the server saw of one connection.
 *
 * @example
 * ```ts
 * import type { ClientConnectionLog } from "@nbd/codec";
 * const log: ClientConnectionLog = { findings: [], seen: ["NBD_OPT_GO", "NBD_CMD_DISC"], ended: "NBD_CMD_DISC" };
 * console.log(log.seen.length); // 2
 * ```
 */
export interface ClientConnectionLog {
  /** The client's spec violations, in order. */
  readonly findings: readonly ClientFinding[];
  /** Options and commands, in order. */
  readonly seen: readonly string[];
  /** How the client ended it cleanly (`NBD_CMD_DISC`, `NBD_OPT_ABORT`), or the server's reason; undefined: the client just closed. */
  readonly ended: string | undefined;
}

/**
 * Everything `conform client` observed.
 *
 * @example
 * ```ts
 * import type { ClientObservation } from "@nbd/codec";
 * const o: ClientObservation = { connections: [], exitCode: 0 };
 * console.log(o.exitCode); // 0
 * ```
 */
export interface ClientObservation {
  /** One log per connection the client made. */
  readonly connections: readonly ClientConnectionLog[];
  /** The command's exit status (undefined when no command was given). */
  readonly exitCode?: number | null;
  /** Whether the command should fail (a profile that makes reads fail): then a nonzero status passes. */
  readonly expectFailure?: boolean;
  /** Whether the data the command wrote out equals the export (undefined when not checked). */
  readonly dataMatches?: boolean;
}

/** A client case: data, and how to judge an observation. */
export interface ClientCase extends ConformCase {
  /** Finding rules (from the server core and the request decoder) that break this case's rule. */
  readonly rules: readonly string[];
}

function def(c: Omit<ClientCase, "role" | "writes">): ClientCase {
  return { role: "client", writes: false, ...c };
}

/** Every case `conform client` reports, in order. */
export const CLIENT_CASES: readonly ClientCase[] = [
  def({
    id: "client.flags",
    area: "client",
    title: "Client flags are known and match what the server offered",
    section: "Values / Client flags",
    quote:
      "Clients MUST NOT set any other flags; ... NBD_FLAG_C_NO_ZEROES; MUST NOT be set if the server did not set NBD_FLAG_NO_ZEROES",
    level: "MUST",
    rules: ["client-flags"],
  }),
  def({
    id: "client.option-framing",
    area: "client",
    title: "Options start with IHAVEOPT and have sane lengths",
    section: "Newstyle negotiation",
    quote: "C: 64 bits, 0x49484156454F5054 (ASCII 'IHAVEOPT')",
    level: "MUST",
    rules: ["option-magic", "option-length"],
  }),
  def({
    id: "client.request-format",
    area: "client",
    title: "Requests are well-formed in the negotiated header style (extended WRITE sets PAYLOAD_LEN)",
    section: "ext: Transmission / Request message",
    quote: "The command NBD_CMD_WRITE MUST use the flag NBD_CMD_FLAG_PAYLOAD_LEN in this mode",
    level: "MUST",
    rules: ["request", "request-header-style", "request-payload-len", "request-flags", "*decoder*"],
  }),
  def({
    id: "client.command-flags",
    area: "client",
    title: "Command flags are known, valid for the command and advertised",
    section: "Command flags",
    quote: "Clients MUST NOT set a command flag bit that is not documented for the particular command",
    level: "MUST",
    rules: ["command-flags", "df-unadvertised"],
  }),
  def({
    id: "client.request-range",
    area: "client",
    title: "Requests stay inside the export",
    section: "Size constraints",
    quote: "the client MUST NOT use a length which, when added to offset, would exceed the export size",
    level: "MUST",
    rules: ["request-range"],
  }),
  def({
    id: "client.alignment",
    area: "client",
    title: "Requests are aligned to the advertised minimum block size",
    section: "Size constraints",
    quote:
      "the client MUST ensure that offset and length are integer multiples of any advertised minimum block size",
    level: "MUST",
    rules: ["request-alignment"],
  }),
  def({
    id: "client.payload-max",
    area: "client",
    title: "WRITE payloads stay within the maximum payload",
    section: "Size constraints",
    quote: "the client MUST NOT request a length larger than the maximum payload size",
    level: "MUST",
    rules: ["payload-max"],
  }),
  def({
    id: "client.block-status-negotiated",
    area: "client",
    title: "BLOCK_STATUS only after a context was selected",
    section: "Request types / NBD_CMD_BLOCK_STATUS",
    quote:
      "A client MUST NOT send NBD_CMD_BLOCK_STATUS unless within the negotiation phase it sent NBD_OPT_SET_META_CONTEXT at least once",
    level: "MUST",
    rules: ["block-status-unnegotiated", "block-status-no-context"],
  }),
  def({
    id: "client.known-commands",
    area: "client",
    title: "No unknown command types",
    section: "Request types",
    quote: "The client MUST NOT use a feature documented as 'exposed' by a flag unless that flag was set.",
    level: "MUST",
    rules: ["command-unknown"],
  }),
  def({
    id: "client.soft-disconnect",
    area: "client",
    title: "The client ends each session with NBD_CMD_DISC or NBD_OPT_ABORT",
    section: "Termination of the session during option haggling",
    quote: "A party MUST NOT initiate a hard disconnect save where set out in this section.",
    level: "MUST",
    rules: [],
  }),
  def({
    id: "client.result",
    area: "client",
    title: "The command succeeds (or fails cleanly where the profile makes it fail)",
    section: "Compatibility and interoperability",
    quote:
      "the client MUST reassemble content chunks into the correct order ... clients SHOULD be prepared to also handle NBD_REP_ERR_UNSUP",
    level: "MUST",
    rules: [],
  }),
  def({
    id: "client.data",
    area: "client",
    title: "The data the command read equals the export",
    section: "Request types / NBD_CMD_READ",
    quote: "the client MUST reassemble content chunks into the correct order",
    level: "MUST",
    rules: [],
  }),
];

/**
 * Judges an observation: one result per case of {@link CLIENT_CASE_CATALOGUE}, in its order.
 *
 * @example
 * ```ts
 * import { evaluateClient } from "@nbd/codec";
 * const results = evaluateClient({ connections: [{ findings: [], seen: ["NBD_OPT_ABORT"], ended: "NBD_OPT_ABORT" }] });
 * console.log(results.every((r) => r.outcome === "pass" || r.outcome === "skip")); // true
 * ```
 */
export function evaluateClient(o: ClientObservation): ConformResult[] {
  const all = o.connections.flatMap((c) => c.findings);
  return CLIENT_CASES.map((c): ConformResult => {
    const r = (outcome: ConformResult["outcome"], detail: string): ConformResult => ({
      id: c.id,
      level: c.level,
      outcome,
      detail,
    });
    if (o.connections.length === 0) return r("skip", "no client connected");
    if (c.id === "client.soft-disconnect") {
      const hard = o.connections.filter((x) => x.ended === undefined);
      if (hard.length) {
        return r(
          violatedOutcome(c.level),
          `${hard.length} of ${o.connections.length} sessions closed without NBD_CMD_DISC or NBD_OPT_ABORT (last: ${
            hard[hard.length - 1]!.seen.slice(-3).join(", ") || "nothing sent"
          })`,
        );
      }
      return r("pass", [...new Set(o.connections.map((x) => x.ended))].join(", "));
    }
    if (c.id === "client.result") {
      if (o.exitCode === undefined) return r("skip", "no command given");
      const ok = o.expectFailure ? o.exitCode !== 0 && o.exitCode !== null : o.exitCode === 0;
      return ok ? r("pass", `exit status ${o.exitCode}`) : r(
        violatedOutcome(c.level),
        `exit status ${o.exitCode}${o.expectFailure ? " (the profile makes reads fail)" : ""}`,
      );
    }
    if (c.id === "client.data") {
      if (o.dataMatches === undefined) return r("skip", "no output to compare (--expect-output)");
      return o.dataMatches ? r("pass", "") : r(violatedOutcome(c.level), "the data differs from the export");
    }
    const known = new Set(CLIENT_CASES.flatMap((x) => x.rules));
    const hit = all.filter((f) =>
      c.rules.includes(f.check) || (c.rules.includes("*decoder*") && !known.has(f.check))
    );
    if (hit.length) return r(violatedOutcome(c.level), `${hit.length}x ${hit[0]!.message}`);
    return r("pass", "");
  });
}

/** The named profiles of `conform client --profile`: legal but unusual server behaviour. */
export const CLIENT_PROFILES: Readonly<
  Record<string, { readonly options: ConformPeerOptions; readonly about: string }>
> = {
  default: { options: {}, about: "every feature, extended headers and structured replies accepted" },
  reorder: {
    options: { reorder: true },
    about: "replies to requests that arrive together sent in reverse order, READ chunks backwards",
  },
  "split-reads": {
    options: { splitReads: 512 },
    about: "every READ split into 512-byte data and hole chunks",
  },
  "no-extended": {
    options: { extended: false },
    about: "NBD_OPT_EXTENDED_HEADERS refused (forces the fallback)",
  },
  "no-structured": {
    options: { extended: false, structured: false },
    about: "extended headers and structured replies refused: simple replies only",
  },
  "min-block": { options: { minBlock: 4096 }, about: "a 4096-byte minimum block size, always advertised" },
  "zeroes": { options: { noZeroes: false }, about: "NBD_FLAG_NO_ZEROES not offered" },
  errors: {
    options: { failReadsFrom: (1 << 20) - 65536 },
    about:
      "READs of the last 64 KiB fail with NBD_EIO and a message (the command is expected to fail cleanly)",
  },
  "many-exports": {
    options: { moreExports: Array.from({ length: 200 }, (_, i) => `export-${i}`) },
    about: "LIST shows 201 exports",
  },
};

/**
 * The case catalogue of `conform client` as data (id, area, title, spec section and quote, level), in the
 * order {@link evaluateClient} reports them.
 *
 * @example
 * ```ts
 * import { CLIENT_CASE_CATALOGUE } from "@nbd/codec";
 * console.log(CLIENT_CASE_CATALOGUE.some((c) => c.id === "client.soft-disconnect")); // true
 * ```
 */
export const CLIENT_CASE_CATALOGUE: readonly ConformCase[] = CLIENT_CASES.map(({ rules: _rules, ...c }) =>
  Object.freeze(c)
);

/** A profile of `conform client`: legal but unusual server behaviour a robust client must handle. */
export interface ClientProfileInfo {
  /** The name `--profile` and {@link createClientConnection} take. */
  readonly name: string;
  /** What the server does differently. */
  readonly about: string;
  /** Whether a correct client is expected to fail (the profile makes reads fail). */
  readonly expectFailure: boolean;
}

/**
 * The profiles of `conform client`, in the order `--help` lists them.
 *
 * @example
 * ```ts
 * import { CLIENT_PROFILE_CATALOGUE } from "@nbd/codec";
 * console.log(CLIENT_PROFILE_CATALOGUE.map((p) => p.name).includes("reorder")); // true
 * ```
 */
export const CLIENT_PROFILE_CATALOGUE: readonly ClientProfileInfo[] = Object.entries(CLIENT_PROFILES).map((
  [name, p],
) => Object.freeze({ name, about: p.about, expectFailure: p.options.failReadsFrom !== undefined }));

/**
 * One client connection served by `conform client`, sans I/O: feed it what the client sent, write what
 * {@link ClientConformConnection.take} returns, close once {@link ClientConformConnection.closing} is true
 * and its bytes are written. Its {@link ClientConformConnection.log} goes into {@link evaluateClient}.
 *
 * @example
 * ```ts
 * import { createClientConnection } from "@nbd/codec";
 * const c = createClientConnection("default");
 * const greeting = c.take()[0]!;
 * console.log(greeting.length, c.closing); // 18 false
 * ```
 */
export interface ClientConformConnection {
  /** Feeds bytes the client sent (any split). */
  receive(bytes: Uint8Array): void;
  /** The bytes to send to the client now, in order (empty when there is nothing to send). */
  take(): Uint8Array[];
  /** True once the server ends the session: send what {@link take} returns, then close. */
  readonly closing: boolean;
  /** What this connection saw so far: the client's violations, the options and commands, how it ended. */
  log(): ClientConnectionLog;
  /** The export's contents (the same for every connection of a profile), to compare with what a client read. */
  exportBytes(): Uint8Array;
}

/**
 * Starts one connection of the `conform client` server under the named profile (see
 * {@link CLIENT_PROFILE_CATALOGUE}): the greeting is ready in `take()`. Throws `RangeError` for an unknown
 * profile.
 *
 * @example
 * ```ts
 * import { createClientConnection, evaluateClient } from "@nbd/codec";
 * const c = createClientConnection("reorder");
 * c.take(); // the greeting
 * // A client that sends its flags, asks for unknown option 99, then just closes (no NBD_OPT_ABORT):
 * c.receive(new Uint8Array([0, 0, 0, 1, 0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0, 0, 0, 99, 0, 0, 0, 0]));
 * c.take();
 * const results = evaluateClient({ connections: [c.log()] });
 * console.log(results.find((r) => r.id === "client.soft-disconnect")?.outcome); // "fail"
 * ```
 */
export function createClientConnection(profile = "default"): ClientConformConnection {
  const p = CLIENT_PROFILES[profile];
  if (p === undefined) {
    throw new RangeError(
      `Cannot create a conform client connection: unknown profile ${JSON.stringify(profile)} (${
        Object.keys(CLIENT_PROFILES).join(", ")
      })`,
    );
  }
  const s = new ConformPeerServer(p.options);
  return {
    receive: (bytes) => s.receive(bytes),
    take: () => s.take(),
    get closing() {
      return s.closing;
    },
    log: () => ({ findings: [...s.findings], seen: [...s.seen], ended: s.ended }),
    exportBytes: () => s.exportBytes(),
  };
}
