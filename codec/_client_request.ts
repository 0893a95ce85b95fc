/**
 * Private helper of the client session: the checks a client makes before it sends a request, against what
 * the server advertised (the spec's "Transmission phase" rules; libnbd's strict mode checks the same:
 * commands, flags, bounds, zero sizes, alignment, payload). Each failed check throws an
 * {@link NbdLocalError} before any byte is produced.
 *
 * @module
 */
import { Command, CommandFlag, TransmissionFlag } from "./constants.ts";
import { type LocalErrorRule, NbdLocalError } from "./session.ts";

/** What the checks need to know about the negotiation. */
export interface RequestContext {
  readonly extended: boolean;
  readonly structured: boolean;
  readonly transmissionFlags: number;
  readonly size: bigint;
  /** `size` as a number, or -1 above 2^53. */
  readonly sizeNum: number;
  readonly minimumBlock: number;
  readonly maximumPayload: number;
  readonly contextIds: ReadonlySet<number>;
}

/** The flags each command may carry (FUA aside, which every command may carry once advertised). */
const ALLOWED_FLAGS: readonly number[] = [
  CommandFlag.DF, // READ
  CommandFlag.PAYLOAD_LEN, // WRITE
  0, // DISC
  0, // FLUSH
  0, // TRIM
  0, // CACHE
  CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO, // WRITE_ZEROES
  CommandFlag.REQ_ONE | CommandFlag.PAYLOAD_LEN, // BLOCK_STATUS
  0, // RESIZE
];

/** The transmission flag each command needs (0: none). */
const NEEDS: readonly number[] = [
  0,
  0,
  0,
  TransmissionFlag.SEND_FLUSH,
  TransmissionFlag.SEND_TRIM,
  TransmissionFlag.SEND_CACHE,
  TransmissionFlag.SEND_WRITE_ZEROES,
  0,
  TransmissionFlag.SEND_RESIZE,
];

const NEED_NAMES: Readonly<Record<number, string>> = {
  [TransmissionFlag.SEND_FLUSH]: "NBD_FLAG_SEND_FLUSH",
  [TransmissionFlag.SEND_TRIM]: "NBD_FLAG_SEND_TRIM",
  [TransmissionFlag.SEND_CACHE]: "NBD_FLAG_SEND_CACHE",
  [TransmissionFlag.SEND_WRITE_ZEROES]: "NBD_FLAG_SEND_WRITE_ZEROES",
  [TransmissionFlag.SEND_RESIZE]: "NBD_FLAG_SEND_RESIZE",
};

const COMMAND_NAMES = [
  "READ",
  "WRITE",
  "DISC",
  "FLUSH",
  "TRIM",
  "CACHE",
  "WRITE_ZEROES",
  "BLOCK_STATUS",
  "RESIZE",
];

function cmdName(command: number): string {
  return `NBD_CMD_${COMMAND_NAMES[command] ?? command}`;
}

function refuse(code: NbdLocalError["code"], rule: LocalErrorRule, message: string): never {
  throw new NbdLocalError(code, rule, message);
}

/**
 * Checks a request against the negotiation. `length` is the effect length, `payloadLength` the bytes that
 * follow the header (WRITE data), `contextIds` the payload form's list.
 */
export function checkRequest(
  c: RequestContext,
  command: number,
  flags: number,
  offset: number | bigint,
  length: number | bigint,
  contextIds: readonly number[] | undefined,
  offsetNum: number,
  lengthNum: number,
): void {
  if (!(command >= 0 && command <= Command.RESIZE)) {
    refuse(
      "bad-argument",
      "command-unknown",
      `Cannot send command ${command}: the spec defines no such command`,
    );
  }
  const tf = c.transmissionFlags;
  const need = NEEDS[command]!;
  if (need !== 0 && (tf & need) === 0) {
    refuse(
      "not-advertised",
      "command-not-advertised",
      `Cannot send ${cmdName(command)}: the server did not advertise ${NEED_NAMES[need]}`,
    );
  }
  const extra = flags & ~(ALLOWED_FLAGS[command]! | CommandFlag.FUA);
  if (extra !== 0) {
    refuse(
      "forbidden",
      "command-flags",
      `Cannot send ${cmdName(command)} with flags 0x${
        extra.toString(16)
      }: they are not defined for this command`,
    );
  }
  if ((flags & CommandFlag.FUA) !== 0 && (tf & TransmissionFlag.SEND_FUA) === 0) {
    refuse(
      "not-advertised",
      "flag-fua",
      `Cannot send ${cmdName(command)} with FUA: the server did not advertise NBD_FLAG_SEND_FUA`,
    );
  }
  if ((flags & CommandFlag.DF) !== 0) {
    if (!c.structured) {
      refuse("not-negotiated", "flag-df", "Cannot send READ with DF: structured replies were not negotiated");
    }
    if ((tf & TransmissionFlag.SEND_DF) === 0) {
      refuse(
        "not-advertised",
        "flag-df",
        "Cannot send READ with DF: the server did not advertise NBD_FLAG_SEND_DF",
      );
    }
  }
  if ((flags & CommandFlag.FAST_ZERO) !== 0 && (tf & TransmissionFlag.SEND_FAST_ZERO) === 0) {
    refuse(
      "not-advertised",
      "flag-fast-zero",
      "Cannot send WRITE_ZEROES with FAST_ZERO: the server did not advertise NBD_FLAG_SEND_FAST_ZERO",
    );
  }
  if (
    (tf & TransmissionFlag.READ_ONLY) !== 0 &&
    (command === Command.WRITE || command === Command.TRIM || command === Command.WRITE_ZEROES ||
      command === Command.RESIZE)
  ) {
    refuse("not-advertised", "read-only", `Cannot send ${cmdName(command)}: the export is read-only`);
  }
  if (command === Command.BLOCK_STATUS) {
    if (!c.structured) {
      refuse(
        "not-negotiated",
        "block-status-negotiation",
        "Cannot send BLOCK_STATUS: structured replies were not negotiated",
      );
    }
    if (c.contextIds.size === 0) {
      refuse(
        "not-negotiated",
        "block-status-contexts",
        "Cannot send BLOCK_STATUS: no metadata context is selected",
      );
    }
    if (contextIds !== undefined) {
      if (!c.extended || (tf & TransmissionFlag.BLOCK_STATUS_PAYLOAD) === 0) {
        refuse(
          "not-advertised",
          "block-status-payload",
          "Cannot send BLOCK_STATUS with a context list: it needs extended headers and NBD_FLAG_BLOCK_STATUS_PAYLOAD",
        );
      }
      if (contextIds.length === 0) {
        refuse(
          "bad-argument",
          "block-status-payload-empty",
          "Cannot send BLOCK_STATUS with an empty context list",
        );
      }
      const seen = new Set<number>();
      for (const id of contextIds) {
        if (!c.contextIds.has(id)) {
          refuse(
            "not-negotiated",
            "block-status-payload-context",
            `Cannot ask for context id ${id}: it was not selected`,
          );
        }
        if (seen.has(id)) {
          refuse("forbidden", "block-status-payload-duplicate", `Cannot ask for context id ${id} twice`);
        }
        seen.add(id);
      }
    }
  }
  if (command === Command.FLUSH || command === Command.DISC) {
    if (offsetNum !== 0 || lengthNum !== 0) {
      refuse(
        "forbidden",
        "request-zero-fields",
        `Cannot send ${cmdName(command)} with an offset or length: both MUST be 0`,
      );
    }
    return;
  }
  if (command === Command.RESIZE) return;
  if (lengthNum === 0) {
    refuse(
      "forbidden",
      "request-zero-length",
      `Cannot send ${cmdName(command)} of length 0: the spec says a client SHOULD NOT`,
    );
  }
  // Numbers where every value is exact (the common case), bigints otherwise.
  const exact = offsetNum >= 0 && c.sizeNum >= 0 && lengthNum <= 0xffff_ffff;
  if (exact ? offsetNum + lengthNum > c.sizeNum : BigInt(offset) + BigInt(length) > c.size) {
    refuse(
      "forbidden",
      "request-range",
      `Cannot send ${cmdName(command)} of ${offset}+${length}: it ends past the export size ${c.size}`,
    );
  }
  const min = c.minimumBlock;
  if (
    min > 1 &&
    (exact
      ? offsetNum % min !== 0 || (lengthNum % min !== 0 && offsetNum + lengthNum !== c.sizeNum)
      : BigInt(offset) % BigInt(min) !== 0n ||
        (BigInt(length) % BigInt(min) !== 0n && BigInt(offset) + BigInt(length) !== c.size))
  ) {
    refuse(
      "forbidden",
      "block-size-alignment",
      `Cannot send ${
        cmdName(command)
      } of ${offset}+${length}: offset and length MUST be multiples of the minimum block size ${min}`,
    );
  }
  if ((command === Command.READ || command === Command.WRITE) && lengthNum > c.maximumPayload) {
    refuse(
      "limit-exceeded",
      "max-payload",
      `Cannot send ${cmdName(command)} of ${length} bytes: above the maximum payload ${c.maximumPayload}`,
    );
  }
}
