// Private: the server session's option-handshake rules, kept apart from the session class so that each
// file stays readable. Pure functions over the session's negotiated state; no I/O.
import { Info, Option, OptionReply, TransmissionFlag } from "./constants.ts";
import type { OptionReplyFrame } from "./option_reply.ts";

/** What an export declares, resolved once (sizes as bigint, flags computed). */
export interface ResolvedExport {
  /** The application's declaration (a `ServerExport`; typed loosely so that this file imports no session). */
  readonly decl: object;
  readonly name: string;
  readonly description: string | undefined;
  readonly size: bigint;
  /** The export's own flags: HAS_FLAGS, READ_ONLY and the SEND_* it supports, without DF / payload form. */
  readonly flags: number;
  readonly blockSize:
    | { readonly minimum: number; readonly preferred: number; readonly maximum: number }
    | undefined;
  readonly initFlags: number | undefined;
  readonly contexts: readonly string[];
  /** Contexts among `contexts` whose status needs 64 bits (extended headers only). */
  readonly wideContexts: readonly string[];
}

/** Flags a server decides from the negotiation, never from the export's declaration. */
export const NEGOTIATED_FLAGS: number = TransmissionFlag.SEND_DF | TransmissionFlag.BLOCK_STATUS_PAYLOAD;

/** An option reply frame with no data. */
export function ack(option: number): OptionReplyFrame {
  return { type: "option-reply", option, reply: OptionReply.ACK, data: { kind: "none" } };
}

/** An option error reply with a message. */
export function optionError(option: number, reply: number, message: string): OptionReplyFrame {
  return { type: "option-reply", option, reply, data: { kind: "error", message } };
}

/** An NBD_REP_INFO reply for one info type of an export, or undefined when the export has nothing for it. */
export function infoReply(
  option: number,
  info: number,
  exp: ResolvedExport,
  transmissionFlags: number,
): OptionReplyFrame | undefined {
  const reply = (payload: Extract<OptionReplyFrame["data"], { kind: "info" }>["info"]): OptionReplyFrame => ({
    type: "option-reply",
    option,
    reply: OptionReply.INFO,
    data: { kind: "info", info: payload },
  });
  switch (info) {
    case Info.EXPORT:
      return reply({ kind: "export", info: Info.EXPORT, size: exp.size, transmissionFlags });
    case Info.NAME:
      return reply({ kind: "name", info: Info.NAME, name: exp.name });
    case Info.DESCRIPTION:
      return exp.description === undefined
        ? undefined
        : reply({ kind: "description", info: Info.DESCRIPTION, description: exp.description });
    case Info.BLOCK_SIZE:
      return exp.blockSize === undefined
        ? undefined
        : reply({ kind: "block-size", info: Info.BLOCK_SIZE, ...exp.blockSize });
    case Info.INIT_FLAGS:
      return exp.initFlags === undefined
        ? undefined
        : reply({ kind: "init-flags", info: Info.INIT_FLAGS, flags: exp.initFlags });
    default:
      return undefined;
  }
}

/**
 * The contexts of an export a LIST or SET query list selects. Exact names match; a query ending in `:`
 * (`base:`, `qemu:`, `qemu:dirty-bitmap:`) is a wildcard for LIST and selects nothing in SET (spec §10.1,
 * §10.2); LIST with no query lists everything. Queries in unknown namespaces are ignored.
 */
export function matchContexts(
  offered: readonly string[],
  queries: readonly string[],
  list: boolean,
): string[] {
  if (list && queries.length === 0) return [...offered];
  const out: string[] = [];
  for (const q of queries) {
    const wildcard = q.endsWith(":");
    if (wildcard && !list) continue;
    for (const name of offered) {
      if ((wildcard ? name.startsWith(q) : name === q) && !out.includes(name)) out.push(name);
    }
  }
  return out;
}

/** Options that take no data; data on them is answered ERR_INVALID (ABORT's is ignored, as the spec asks). */
export function takesNoData(option: number): boolean {
  return option === Option.LIST || option === Option.STARTTLS || option === Option.STRUCTURED_REPLY ||
    option === Option.EXTENDED_HEADERS;
}
