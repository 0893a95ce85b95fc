// Private: checks shared by every frame that carries transmission flags.
import { TransmissionFlag } from "./constants.ts";
import type { Reporter } from "./_report.ts";

/**
 * The rules every transmission flags field follows. Unassigned bits (13-15) are kept, not reported: "Clients
 * SHOULD ignore unknown flags." (spec, Transmission flags; IGNORED_BY_RECEIVER in rules.ts).
 */
export function checkTransmissionFlags(flags: number, offset: number, r: Reporter): void {
  if ((flags & TransmissionFlag.HAS_FLAGS) === 0) {
    r.report(
      "bad-value",
      offset,
      "transmission-has-flags",
      "NBD_FLAG_HAS_FLAGS is clear; it MUST always be set",
    );
  }
  if ((flags & TransmissionFlag.SEND_FAST_ZERO) !== 0 && (flags & TransmissionFlag.SEND_WRITE_ZEROES) === 0) {
    r.report(
      "bad-value",
      offset,
      "transmission-fast-zero",
      "NBD_FLAG_SEND_FAST_ZERO is set without NBD_FLAG_SEND_WRITE_ZEROES; it MUST then be clear",
    );
  }
}

/** What the option haggling negotiated, as a decoder may be told it (option `negotiated`). */
export interface Negotiated {
  readonly structuredReplies: boolean;
  readonly extendedHeaders: boolean;
}

/** The transmission flags whose feature needs a negotiation that `negotiated` says did not happen. */
export function checkNegotiatedFlags(
  flags: number,
  offset: number,
  r: Reporter,
  negotiated: Negotiated,
): void {
  if (
    (flags & TransmissionFlag.SEND_DF) !== 0 && !negotiated.structuredReplies && !negotiated.extendedHeaders
  ) {
    r.report(
      "bad-value",
      offset,
      "transmission-df-unnegotiated",
      "NBD_FLAG_SEND_DF is set, but neither structured replies nor extended headers were negotiated; the " +
        "server MUST then leave it clear",
    );
  }
  if ((flags & TransmissionFlag.BLOCK_STATUS_PAYLOAD) !== 0 && !negotiated.extendedHeaders) {
    r.report(
      "bad-value",
      offset,
      "transmission-block-status-payload-unnegotiated",
      "NBD_FLAG_BLOCK_STATUS_PAYLOAD is set, but extended headers were not negotiated; servers MUST NOT " +
        "advertise it then",
    );
  }
}
