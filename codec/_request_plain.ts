// Private: the request header rules (checkHeader, the general path) and the plain-request fast path beside
// them, shared by the frame decoder (request.ts) and the stream decoders (_stream_impl.ts), so that both build
// the same frames.
//
// Fast path: plainHeader() mirrors checkHeader(), the general path. It is a cheap test that a header breaks
// none of the rules checkHeader() reports (it may say "not plain" for a header that breaks none; never the
// reverse), so that the stream decoders build a plain request's frame with plainRequest() straight from the
// fields they framed, instead of decodeRequest() on the same bytes: 5-6x faster per header on Node 20, 6-13x
// on Deno (bench/request_plain.ts). decodeRequest itself always runs checkHeader(): testing plainHeader()
// first saved nothing measurable there. test/request_plain.test.ts checks, over every combination of style,
// negotiation, command and flags, that a plain header gets no finding from checkHeader().
import { Command, CommandFlag, TransmissionFlag } from "./constants.ts";
import type { Reporter } from "./_report.ts";
import type { Request } from "./_request_frame.ts";

/** Bits 6-15 of the command flags are unassigned. */
export const KNOWN_COMMAND_FLAGS = 0x003f;

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

/** The transmission flag that exposes each command that needs one (index = command; 0: none needed). */
const EXPOSED_BY: readonly number[] = [
  0, // READ
  0, // WRITE
  0, // DISC
  TransmissionFlag.SEND_FLUSH, // FLUSH
  TransmissionFlag.SEND_TRIM, // TRIM
  0, // CACHE (SEND_CACHE only "documents" it: servers support it without the bit)
  TransmissionFlag.SEND_WRITE_ZEROES, // WRITE_ZEROES
  0, // BLOCK_STATUS (negotiated with NBD_OPT_SET_META_CONTEXT)
  0, // RESIZE
];

/** The transmission flags that expose the command flags set in `flags` (FUA, DF, FAST_ZERO). */
function flagsExposedBy(flags: number): number {
  return ((flags & CommandFlag.FUA) !== 0 ? TransmissionFlag.SEND_FUA : 0) |
    ((flags & CommandFlag.DF) !== 0 ? TransmissionFlag.SEND_DF : 0) |
    ((flags & CommandFlag.FAST_ZERO) !== 0 ? TransmissionFlag.SEND_FAST_ZERO : 0);
}

/**
 * The fast path (mirrors {@link checkHeader}): whether a header certainly breaks none of the header rules,
 * tested cheaply. True when the header style agrees with `ctx` (whether extended headers were negotiated,
 * when known), every flag is valid for a known command, no PAYLOAD_LEN, not an extended WRITE, not DISC or
 * FLUSH (whose offset and length checkHeader reads), and, when the server's transmission flags `tflags` are
 * given, nothing they do not expose. Such a request has no payload but a compact WRITE's data, and decodes
 * without findings. A caller that gives checkHeader() transmission flags must give them here too.
 */
export function plainHeader(
  extended: boolean,
  flags: number,
  command: number,
  ctx: boolean | undefined,
  tflags?: number,
): boolean {
  const valid = FLAGS_FOR_COMMAND[command];
  return (ctx === undefined || ctx === extended) && valid !== undefined && (flags & ~valid) === 0 &&
    (flags & CommandFlag.PAYLOAD_LEN) === 0 && command !== Command.DISC && command !== Command.FLUSH &&
    !(extended && command === Command.WRITE) &&
    (tflags === undefined || ((EXPOSED_BY[command]! | flagsExposedBy(flags)) & ~tflags) === 0);
}

/** The frame of a request without a decoded block-status payload: `data` when given, else none. */
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

/**
 * The general path: the header rules of a request, one by one, each reported through `r` (`ctx`: whether
 * extended headers were negotiated, when known; `tflags`: the server's transmission flags, when known). `dv`
 * reads the header at `p`; `at` is its index in the decoder's input, for finding offsets.
 */
export function checkHeader(
  dv: DataView,
  p: number,
  at: number,
  extended: boolean,
  flags: number,
  command: number,
  r: Reporter,
  ctx: boolean | undefined,
  tflags?: number,
): void {
  if (tflags !== undefined) checkExposed(at, extended, flags, command, r, tflags);
  if (ctx !== undefined && ctx !== extended) {
    r.report(
      "unexpected-frame",
      at,
      "request-header-style",
      extended
        ? "extended request, but extended headers were not negotiated; the client MUST use compact requests"
        : "compact request, but extended headers were negotiated; the client MUST then use extended requests",
    );
  }
  if ((flags & ~KNOWN_COMMAND_FLAGS) !== 0) {
    r.report(
      "reserved-bits",
      at + 4,
      "command-flags-reserved",
      `command flags 0x${flags.toString(16)} set unassigned bits 6-15; clients MUST NOT set them`,
    );
  }
  if (!extended && (flags & CommandFlag.PAYLOAD_LEN) !== 0) {
    r.report(
      "reserved-bits",
      at + 4,
      "compact-payload-len",
      "NBD_CMD_FLAG_PAYLOAD_LEN in a compact request; the client MUST NOT use it without extended headers",
    );
  }
  const valid = FLAGS_FOR_COMMAND[command];
  if (valid !== undefined) {
    // PAYLOAD_LEN in compact requests is reported above, once.
    const wrong = flags & KNOWN_COMMAND_FLAGS & ~valid & (extended ? 0xffff : ~CommandFlag.PAYLOAD_LEN);
    if (wrong !== 0) {
      r.report(
        "reserved-bits",
        at + 4,
        "command-flags",
        `command flags 0x${wrong.toString(16)} are not valid for command ${command} (spec: command flags)`,
      );
    }
  }
  if (extended && command === Command.WRITE && (flags & CommandFlag.PAYLOAD_LEN) === 0) {
    r.report(
      "bad-value",
      at + 4,
      "write-payload-len",
      "extended NBD_CMD_WRITE without NBD_CMD_FLAG_PAYLOAD_LEN; the client MUST set it (qemu 10 does not)",
    );
  }
  if (command === Command.DISC || command === Command.FLUSH) {
    const offsetZero = (dv.getUint32(p + 16) | dv.getUint32(p + 20)) === 0;
    const lengthZero = extended
      ? (dv.getUint32(p + 24) | dv.getUint32(p + 28)) === 0
      : dv.getUint32(p + 24) === 0;
    if (!offsetZero || !lengthZero) {
      const name = command === Command.DISC ? "disc" : "flush";
      r.report(
        "bad-value",
        offsetZero ? at + 24 : at + 16,
        command === Command.DISC ? "disc-offset-length" : "flush-offset-length",
        `NBD_CMD_${name.toUpperCase()} with a nonzero offset or length; both MUST be 0`,
      );
    }
  }
  if (
    extended && (flags & CommandFlag.PAYLOAD_LEN) !== 0 && (dv.getUint32(p + 24) | dv.getUint32(p + 28)) === 0
  ) {
    r.report(
      "bad-length",
      at + 24,
      "payload-len-zero",
      "NBD_CMD_FLAG_PAYLOAD_LEN with length 0; the length MUST then be a nonzero payload length",
    );
  }
}

/**
 * The client MUST NOT use a feature exposed by a transmission flag the server did not set: the commands and
 * command flags that need one, and (a SHOULD) BLOCK_STATUS's payload form.
 */
function checkExposed(
  at: number,
  extended: boolean,
  flags: number,
  command: number,
  r: Reporter,
  tflags: number,
): void {
  const forCommand = EXPOSED_BY[command] ?? 0;
  if ((forCommand & ~tflags) !== 0) {
    r.report(
      "unexpected-frame",
      at + 6,
      "command-unadvertised",
      `command ${command} needs transmission flag 0x${
        forCommand.toString(16)
      }, which the server did not set ` +
        `(flags 0x${tflags.toString(16)}); the client MUST NOT send it then`,
    );
  }
  // Only flags valid for the command: others are reported by the command-flags rule.
  const missing = flagsExposedBy(flags & (FLAGS_FOR_COMMAND[command] ?? 0)) & ~tflags;
  if (missing !== 0) {
    r.report(
      "reserved-bits",
      at + 4,
      "command-flag-unadvertised",
      `command flags 0x${flags.toString(16)} need transmission flags 0x${missing.toString(16)}, which the ` +
        `server did not set (flags 0x${tflags.toString(16)}); the client MUST NOT set them then`,
    );
  }
  if (
    extended && command === Command.BLOCK_STATUS && (flags & CommandFlag.PAYLOAD_LEN) !== 0 &&
    (tflags & TransmissionFlag.BLOCK_STATUS_PAYLOAD) === 0
  ) {
    r.report(
      "reserved-bits",
      at + 4,
      "block-status-payload-unadvertised",
      "NBD_CMD_BLOCK_STATUS with NBD_CMD_FLAG_PAYLOAD_LEN, but the server did not set " +
        "NBD_FLAG_BLOCK_STATUS_PAYLOAD; clients SHOULD NOT use the payload form then",
    );
  }
}
