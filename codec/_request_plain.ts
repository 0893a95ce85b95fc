// Private: the request header rules' cheap test and the frame of a request that breaks none of them, shared
// by the frame decoder (request.ts) and the stream decoders' fast path (_stream_impl.ts), so that both
// build the same frames.
import { Command, CommandFlag } from "./constants.ts";
import type { Request } from "./request.ts";

/**
 * The command flags each known command accepts (index = command). FUA is valid on every command once the
 * server advertised SEND_FUA (spec §Request message, "NBD_CMD_FLAG_FUA"); RESIZE (experimental) defines none.
 */
export const FLAGS_FOR_COMMAND: readonly number[] = [
  CommandFlag.FUA | CommandFlag.DF, // READ
  CommandFlag.FUA | CommandFlag.PAYLOAD_LEN, // WRITE
  CommandFlag.FUA, // DISC
  CommandFlag.FUA, // FLUSH
  CommandFlag.FUA, // TRIM
  CommandFlag.FUA, // CACHE
  CommandFlag.FUA | CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO, // WRITE_ZEROES
  CommandFlag.FUA | CommandFlag.REQ_ONE | CommandFlag.PAYLOAD_LEN, // BLOCK_STATUS
  CommandFlag.FUA, // RESIZE
];

/**
 * Whether a header certainly breaks none of the header rules (the common case, tested cheaply): the header
 * style agrees with `ctx` (whether extended headers were negotiated, when known), every flag is valid for a
 * known command, no PAYLOAD_LEN, not an extended WRITE, not DISC or FLUSH. Such a request has no payload but
 * a compact WRITE's data, and decodes without findings.
 */
export function plainHeader(
  extended: boolean,
  flags: number,
  command: number,
  ctx: boolean | undefined,
): boolean {
  const valid = FLAGS_FOR_COMMAND[command];
  return (ctx === undefined || ctx === extended) && valid !== undefined && (flags & ~valid) === 0 &&
    (flags & CommandFlag.PAYLOAD_LEN) === 0 && command !== Command.DISC && command !== Command.FLUSH &&
    !(extended && command === Command.WRITE);
}

/** The frame of a request with a {@link plainHeader}: `data` for a WRITE, none for the other commands. */
export function plainRequest(
  extended: boolean,
  flags: number,
  command: number,
  cookie: bigint,
  offset: bigint,
  length: bigint,
  data: Uint8Array | undefined,
): Request {
  return data === undefined
    ? { type: "request", extended, flags, command, cookie, offset, length }
    : { type: "request", extended, flags, command, cookie, offset, length, data };
}
