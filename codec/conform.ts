/**
 * The vocabulary of `nbd-codec conform`: conformance cases as data (a stable id, the spec clause, a one-line
 * quote, a level), their outcomes, the transport a runner needs, and the report formats (a table, JSON,
 * JUnit XML). Pure: the transport is the caller's; a case never sees a socket or a clock.
 *
 * @module
 */

/**
 * How binding a rule is, in the spec's RFC 2119 words.
 *
 * @example
 * ```ts
 * import type { ConformLevel } from "@nbd/codec";
 * const level: ConformLevel = "MUST";
 * console.log(level); // "MUST"
 * ```
 */
export type ConformLevel = "MUST" | "SHOULD" | "MAY";

/**
 * What a case found: `pass`; `fail` (a MUST broken); `warn` (a SHOULD broken, or a MAY feature absent
 * when the case is informational); `skip` (the case does not apply: not advertised, writes not allowed).
 *
 * @example
 * ```ts
 * import type { ConformOutcome } from "@nbd/codec";
 * const o: ConformOutcome = "warn";
 * console.log(o); // "warn"
 * ```
 */
export type ConformOutcome = "pass" | "fail" | "warn" | "skip";

/**
 * One conformance case, as data: everything but the code that runs it.
 *
 * @example
 * ```ts
 * import { SERVER_CASE_CATALOGUE } from "@nbd/codec";
 * const c = SERVER_CASE_CATALOGUE.find((x) => x.id === "opt.unknown")!;
 * console.log(c.level, c.section); // "MUST" "Compatibility and interoperability / Baseline"
 * ```
 */
export interface ConformCase {
  /** Stable id, `area.rule` in kebab case (`opt.unknown`, `read.coverage`). Never reused for another rule. */
  readonly id: string;
  /** Who is checked: `server` (a live server, by our client) or `client` (a live client, by our server). */
  readonly role: "server" | "client";
  /** Group for the catalogue: `handshake`, `options`, `info`, `meta`, `transmission`, ... */
  readonly area: string;
  /** What the case does, in a few words. */
  readonly title: string;
  /** The section of the spec (doc/proto.md; `ext:` for branch extension-ext-header). */
  readonly section: string;
  /** The sentence of the spec it checks, quoted (abridged with "..." where long). */
  readonly quote: string;
  /** The rule's level. A broken MUST fails, a broken SHOULD warns. */
  readonly level: ConformLevel;
  /** Whether the case writes to the export (run only with `--allow-writes`). */
  readonly writes: boolean;
}

/**
 * The outcome of one case.
 *
 * @example
 * ```ts
 * import type { ConformResult } from "@nbd/codec";
 * const r: ConformResult = { id: "opt.abort", level: "MUST", outcome: "fail", detail: "closed without NBD_REP_ACK" };
 * console.log(r.outcome); // "fail"
 * ```
 */
export interface ConformResult {
  /** The case id. */
  readonly id: string;
  /** The case's level. */
  readonly level: ConformLevel;
  /** What happened. */
  readonly outcome: ConformOutcome;
  /** Why: what was sent and what came back, the reason for a skip, or a note on a pass. */
  readonly detail: string;
}

/**
 * A byte stream to the peer under test, opened per case by the runner's caller. `receive` resolves with
 * the next bytes, with `null` at end of stream, and rejects with {@link ConformTimeoutError} when the
 * transport's time bound for the case has passed: that is what keeps every case bounded.
 *
 * @example
 * ```ts
 * import type { ConformConnection } from "@nbd/codec";
 * // A connection to nothing: it ends at once.
 * const c: ConformConnection = {
 *   send: () => Promise.resolve(),
 *   receive: () => Promise.resolve(null),
 *   close: () => {},
 * };
 * console.log(await c.receive()); // null
 * ```
 */
export interface ConformConnection {
  /** Sends bytes (resolves when written). Rejects when the peer has closed the connection. */
  send(bytes: Uint8Array): Promise<void>;
  /** The next bytes received, or `null` when the peer closed the connection. */
  receive(): Promise<Uint8Array | null>;
  /** Closes the connection (idempotent). */
  close(): void;
}

/**
 * Thrown by a transport's `receive` when the case's time bound has passed.
 *
 * @example
 * ```ts
 * import { ConformTimeoutError } from "@nbd/codec";
 * console.log(new ConformTimeoutError("no answer within 5000 ms").message); // "no answer within 5000 ms"
 * ```
 */
export class ConformTimeoutError extends Error {
  /**
   * Creates the error (transports do this).
   *
   * @param message what was being waited for
   */
  constructor(message = "no reply within the time bound") {
    super(message);
    this.name = "ConformTimeoutError";
  }
}

/** Thrown by case code: the peer broke the case's rule. */
export class ConformViolation extends Error {
  /** @param message what was expected and what came instead */
  constructor(message: string) {
    super(message);
    this.name = "ConformViolation";
  }
}

/** Thrown by case code: the case does not apply to this peer. */
export class ConformSkip extends Error {
  /** @param reason why (not advertised, writes not allowed, ...) */
  constructor(reason: string) {
    super(reason);
    this.name = "ConformSkip";
  }
}

/**
 * Thrown when the run cannot start (connection refused, no export): exit status 2, not a finding.
 *
 * @example
 * ```ts
 * import { ConformSetupError, runServerCases } from "@nbd/codec";
 * const target = { exportName: "disk", connect: () => Promise.reject(new Error("refused")) };
 * try {
 *   await runServerCases(target);
 * } catch (e) {
 *   console.log(e instanceof ConformSetupError); // true
 * }
 * ```
 */
export class ConformSetupError extends Error {
  /**
   * Creates the error (the runner does this).
   *
   * @param message what failed
   */
  constructor(message: string) {
    super(message);
    this.name = "ConformSetupError";
  }
}

/** The outcome for a rule that was broken, by level. */
export function violatedOutcome(level: ConformLevel): ConformOutcome {
  return level === "MUST" ? "fail" : "warn";
}

/**
 * Exit status for a finished run: 1 when any case failed (a MUST), else 0.
 *
 * @example
 * ```ts
 * import { conformExitCode } from "@nbd/codec";
 * console.log(conformExitCode([{ id: "a.b", level: "SHOULD", outcome: "warn", detail: "" }])); // 0
 * ```
 */
export function conformExitCode(results: readonly ConformResult[]): 0 | 1 {
  return results.some((r) => r.outcome === "fail") ? 1 : 0;
}

/** Counts per outcome. */
export function conformSummary(results: readonly ConformResult[]): Record<ConformOutcome, number> {
  const s: Record<ConformOutcome, number> = { pass: 0, fail: 0, warn: 0, skip: 0 };
  for (const r of results) s[r.outcome]++;
  return s;
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}

/**
 * A human table: one line per case (outcome, level, id, detail), then the counts.
 *
 * @example
 * ```ts
 * import { formatConformTable } from "@nbd/codec";
 * const text = formatConformTable([{ id: "opt.unknown", level: "MUST", outcome: "pass", detail: "" }]);
 * console.log(text.split("\n")[1]); // "1 cases: 1 pass, 0 fail, 0 warn, 0 skip"
 * ```
 */
export function formatConformTable(results: readonly ConformResult[]): string {
  const w = Math.max(8, ...results.map((r) => r.id.length));
  const lines = results.map((r) =>
    `${pad(r.outcome.toUpperCase(), 5)} ${pad(r.level, 6)} ${pad(r.id, w)} ${r.detail.replace(/\s+/g, " ")}`
  );
  const s = conformSummary(results);
  lines.push(`${results.length} cases: ${s.pass} pass, ${s.fail} fail, ${s.warn} warn, ${s.skip} skip`);
  return lines.join("\n") + "\n";
}

/**
 * One JSON object per line and per case: the case's data and its result.
 *
 * @example
 * ```ts
 * import { formatConformJson, SERVER_CASE_CATALOGUE } from "@nbd/codec";
 * const line = formatConformJson([{ id: "opt.abort", level: "MUST", outcome: "pass", detail: "" }], SERVER_CASE_CATALOGUE);
 * console.log(JSON.parse(line).area); // "options"
 * ```
 */
export function formatConformJson(
  results: readonly ConformResult[],
  cases: readonly ConformCase[],
): string {
  const byId = new Map(cases.map((c) => [c.id, c]));
  return results.map((r) => {
    const c = byId.get(r.id);
    return JSON.stringify({
      id: r.id,
      outcome: r.outcome,
      level: r.level,
      detail: r.detail,
      area: c?.area,
      title: c?.title,
      section: c?.section,
      quote: c?.quote,
    });
  }).join("\n") + "\n";
}

function xml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`)
    // deno-lint-ignore no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "?");
}

/**
 * JUnit XML: one test case per conformance case; `fail` is a failure, `skip` skipped, `warn` a pass with output.
 *
 * @example
 * ```ts
 * import { formatConformJunit, SERVER_CASE_CATALOGUE } from "@nbd/codec";
 * const xml = formatConformJunit([{ id: "opt.abort", level: "MUST", outcome: "fail", detail: "closed" }], SERVER_CASE_CATALOGUE, "my-server");
 * console.log(xml.includes('failures="1"')); // true
 * ```
 */
export function formatConformJunit(
  results: readonly ConformResult[],
  cases: readonly ConformCase[],
  suite: string,
): string {
  const byId = new Map(cases.map((c) => [c.id, c]));
  const s = conformSummary(results);
  const out = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuites><testsuite name="${
      xml(suite)
    }" tests="${results.length}" failures="${s.fail}" skipped="${s.skip}">`,
  ];
  for (const r of results) {
    const c = byId.get(r.id);
    out.push(`<testcase classname="${xml(`${suite}.${c?.area ?? "case"}`)}" name="${xml(r.id)}">`);
    if (r.outcome === "fail") {
      out.push(`<failure message="${xml(r.detail)}">${xml(c?.quote ?? "")}</failure>`);
    } else if (r.outcome === "skip") out.push(`<skipped message="${xml(r.detail)}"/>`);
    else if (r.outcome === "warn") {
      out.push(`<system-out>${xml(`WARN (${r.level}): ${r.detail}`)}</system-out>`);
    }
    out.push(`</testcase>`);
  }
  out.push(`</testsuite></testsuites>`);
  return out.join("\n") + "\n";
}
