// Private: checks shared by every frame that carries transmission flags.
import { TransmissionFlag } from "./constants.ts";
import type { Reporter } from "./_report.ts";

/** Bits 13-15 of the transmission flags are unassigned. */
export const KNOWN_TRANSMISSION_FLAGS = 0x1fff;

export function checkTransmissionFlags(flags: number, offset: number, r: Reporter): void {
  if ((flags & TransmissionFlag.HAS_FLAGS) === 0) {
    r.report(
      "bad-value",
      offset,
      "transmission-has-flags",
      "NBD_FLAG_HAS_FLAGS is clear; it MUST always be set",
    );
  }
  if ((flags & ~KNOWN_TRANSMISSION_FLAGS) !== 0) {
    r.report(
      "reserved-bits",
      offset,
      "transmission-flags-reserved",
      `transmission flags 0x${flags.toString(16)} set unassigned bits 13-15`,
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
