// Private: the error the stream and conversation decoders throw in strict mode, below stream.ts (which exports
// it), conversation.ts and _stream_impl.ts, so that every import runs downward.
import { isNbdDecodeError, NbdDecodeError } from "./errors.ts";
import type { StreamEvent } from "./events.ts";

/**
 * What a stream or conversation decoder throws in strict mode: the violation, as an {@link NbdDecodeError}
 * (same `code`, stream `offset` and `rule`; `isNbdDecodeError` holds), and the events that the same call had
 * decoded before it, in order, so that nothing already decoded is lost. `events` is empty when the
 * violation was the call's first event.
 *
 * @example
 * ```ts
 * import { ClientStreamDecoder, NbdStreamError } from "@nbd/codec";
 * const hex = (h: string) => Uint8Array.from(h.match(/../g)!, (x) => parseInt(x, 16));
 * // Client flags, then 16 bytes that are not an option request (bad magic).
 * const d = new ClientStreamDecoder({ strict: true });
 * try {
 *   d.push(hex("00000001" + "00".repeat(16)));
 * } catch (e) {
 *   if (e instanceof NbdStreamError) {
 *     console.log(e.code, e.offset, e.events.map((x) => x.event === "frame" && x.frame.type));
 *     // "bad-magic" 4 [ "client-flags" ]
 *   }
 * }
 * ```
 */
export class NbdStreamError<E extends StreamEvent = StreamEvent> extends NbdDecodeError {
  /** The events decoded by the same call before the violation, in order. */
  readonly events: readonly E[];

  /**
   * Creates the error; the decoders do this.
   *
   * @param error the violation
   * @param events the events decoded before it by the same call
   */
  constructor(error: NbdDecodeError, events: readonly E[]) {
    super(error.code, error.offset, error.rule, error.message);
    this.events = events;
  }
}

/**
 * Throws `e` with `before` (the events a call decoded before `e` was thrown) in front of the events it
 * already carries; anything but an {@link NbdDecodeError} is rethrown as it is.
 */
export function throwWithEvents<E extends StreamEvent>(e: unknown, before: readonly E[]): never {
  if (!isNbdDecodeError(e)) throw e;
  const later = e instanceof NbdStreamError ? (e.events as readonly E[]) : [];
  if (e instanceof NbdStreamError && before.length === 0) throw e;
  throw new NbdStreamError<E>(e, later.length === 0 ? before : [...before, ...later]);
}
