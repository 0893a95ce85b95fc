// Private: collecting findings, and throwing them in strict mode.
import { type Finding, NbdDecodeError, type NbdDecodeErrorCode } from "./errors.ts";
import { type RuleId, RULES } from "./rules.ts";
import { type DecodeOptions, DEFAULT_MAX_PAYLOAD_LENGTH, MAX_STRING_LENGTH } from "./types.ts";

/** Shared frozen empty list: frames without findings allocate nothing for them. */
export const NO_FINDINGS: readonly Finding[] = Object.freeze([]) as readonly Finding[];

/** Collects findings for one decode call; throws at the first one in strict mode. */
export class Reporter {
  readonly strict: boolean;
  findings: Finding[] | undefined;
  constructor(strict: boolean) {
    this.strict = strict;
    this.findings = undefined;
  }
  /**
   * A violation of a rule of the catalogue (codec/rules.ts): thrown in strict mode, and in lenient mode
   * recorded as a finding, or thrown when the catalogue says lenient decoding cannot go on past it.
   */
  report(code: NbdDecodeErrorCode, offset: number, rule: RuleId, message: string): void {
    if (this.strict || RULES[rule].lenient === "throw") throw new NbdDecodeError(code, offset, rule, message);
    (this.findings ??= []).push({ code, offset, rule, message });
  }
  list(): readonly Finding[] {
    return this.findings ?? NO_FINDINGS;
  }
}

/** The strict-mode reporter every decode call shares: it throws at the first finding and so never keeps any. */
const STRICT_REPORTER = new Reporter(true);

/**
 * A reporter for one decode call (`options.strict`, default true): the shared strict one (no allocation on
 * the fast path), or a fresh lenient one that collects findings.
 */
export function reporterFor(options: DecodeOptions | undefined): Reporter {
  return (options?.strict ?? true) ? STRICT_REPORTER : new Reporter(false);
}

/**
 * `options.offset` checked against the input (default 0), without building a resolved options object: the
 * decoders of the transmission phase read the other options where they need them.
 */
export function inputOffset(options: DecodeOptions | undefined, bytes: Uint8Array): number {
  if (options === undefined) return 0;
  const offset = options.offset ?? 0;
  if (!Number.isInteger(offset) || offset < 0 || offset > bytes.length) badOffset(offset, bytes);
  return offset;
}

function badOffset(offset: number, bytes: Uint8Array): never {
  throw new RangeError(`Cannot decode: offset ${offset} is outside the input (length ${bytes.length})`);
}

/** A violation that leaves nothing to decode: thrown in both modes. */
export function fail(code: NbdDecodeErrorCode, offset: number, rule: RuleId, message: string): never {
  throw new NbdDecodeError(code, offset, rule, message);
}

export interface ResolvedOptions {
  readonly offset: number;
  readonly strict: boolean;
  readonly maxStringLength: number;
  readonly maxPayloadLength: number;
}

const DEFAULTS: ResolvedOptions = Object.freeze({
  offset: 0,
  strict: true,
  maxStringLength: MAX_STRING_LENGTH,
  maxPayloadLength: DEFAULT_MAX_PAYLOAD_LENGTH,
});

/**
 * The options with their defaults filled in. Allocation-free when `options` is absent (the shared defaults)
 * or already complete (every field given: the caller's object itself is returned); otherwise a new object.
 * The transmission-phase decoders use {@link inputOffset} and {@link reporterFor} instead, which never
 * allocate.
 */
export function resolveOptions(options: DecodeOptions | undefined, bytes: Uint8Array): ResolvedOptions {
  if (options === undefined) return DEFAULTS;
  const offset = inputOffset(options, bytes);
  if (
    options.offset !== undefined && options.strict !== undefined && options.maxStringLength !== undefined &&
    options.maxPayloadLength !== undefined
  ) {
    return options as ResolvedOptions;
  }
  return {
    offset,
    strict: options.strict ?? true,
    maxStringLength: options.maxStringLength ?? MAX_STRING_LENGTH,
    maxPayloadLength: options.maxPayloadLength ?? DEFAULT_MAX_PAYLOAD_LENGTH,
  };
}

/** The "need more bytes" result, shared per count for small counts to avoid allocation. */
const NEED: { readonly done: false; readonly needed: number }[] = [];
for (let i = 0; i <= 256; i++) NEED.push(Object.freeze({ done: false as const, needed: i }));
export function needMore(n: number): { readonly done: false; readonly needed: number } {
  return n <= 256 ? NEED[n]! : { done: false, needed: n };
}

/** Refuses a length above a limit before anything waits for or slices the bytes. */
export function checkLimit(length: number, limit: number, offset: number, what: string): void {
  if (length > limit) {
    fail(
      "limit-exceeded",
      offset,
      "max-payload-length",
      `Cannot decode ${what}: length ${length} exceeds the limit of ${limit} bytes (option maxPayloadLength)`,
    );
  }
}
