// Private: checks shared by every frame that carries transmission flags.
import { TransmissionFlag } from "./constants.ts";
import type { Reporter } from "./_report.ts";

/**
 * The rules every transmission flags field follows. Unassigned bits (13-15) are kept, not reported: "Clients
 * SHOULD ignore unknown flags." (spec, Transmission flags; IGNORED_BITS in rules.ts).
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
