/**
 * V8's interrupt budget for the command line: how much bytecode a function runs before V8 considers
 * optimising it (66 KB by default). A run over a capture of few, large packets (a 100 MB loopback capture has
 * 4 569) ends before most optimised code pays for its compiling, which then costs a third of the run's CPU
 * time on two cores. Runs over a capture file of {@link COLD_MIN_BYTES} or more start with four times the
 * budget ({@link startCold}, before the capture's first packet) and go back to the default once the capture
 * turns out to be long ({@link warmUp}; `cli.ts`, `WARM_PACKETS`), or to a larger one still when its first
 * chunk shows it short ({@link stayCold}). Not when the user set the budget; a runtime without V8 flags keeps
 * its own. The flags are set through V8's binding rather than `node:v8` ({@link v8Flags}).
 *
 * The code cache of `start.ts` is checked against V8's flags: it is read with the default budget, so it is
 * written with the default budget too ({@link budgetChanged}, then {@link DEFAULT_BUDGET}), or the next run
 * would reject it.
 *
 * @module
 */
import process from "node:process";

const COLD = "--interrupt-budget=270336";
/** The budget of a run known to be short: 16 times V8's default, so that V8 optimises next to nothing. */
const SHORT = "--interrupt-budget=1081344";
/** V8's default interrupt budget, as a flag. */
export const DEFAULT_BUDGET = "--interrupt-budget=67584";
/** Capture files from this size on start with the larger budget. */
export const COLD_MIN_BYTES: number = 4 * 1024 * 1024;
/**
 * A capture of this many packets or more makes a long run: one that optimising pays for (see `cli.ts`,
 * `WARM_PACKETS`, and {@link warmUp}). A 100 MB capture of 64 KiB segments (4 569 packets) is short; one of
 * 4 KiB frames (46 739), or any 1 GB capture, is long. `start.ts` keeps a code cache for each kind of run.
 */
export const LONG_RUN_PACKETS = 16384;
/** Set on the global object while the budget differs from V8's default (seen by start.ts's own copy). */
const CHANGED = Symbol.for("nbd-codec.interrupt-budget-changed");

type Flags = { setFlagsFromString(flags: string): void };
let v8: Flags | undefined;

/** What this module needs of Node's `process`, typed. */
type NodeProcess = { binding?: (name: string) => unknown; noDeprecation?: boolean | undefined };

/**
 * V8's flag setter without loading `node:v8`: that module loads Node's heap snapshot code and with it the
 * whole of `node:stream`, about 25 modules and 2 ms of every cold start (bench/RESULTS.md). Its
 * `setFlagsFromString` is the binding's function behind a type check, reached here through
 * `process.binding("v8")`. Node warns that this access is deprecated; the warning is silenced for this one
 * call (`process.noDeprecation`, which also keeps `--throw-deprecation` from throwing), and set back after.
 * Undefined where there is no such binding (Deno, a later Node): then the caller loads `node:v8`.
 */
export function v8Flags(): Flags | undefined {
  const p = process as unknown as NodeProcess;
  if (typeof p.binding !== "function") return undefined;
  const own = Object.prototype.hasOwnProperty.call(p, "noDeprecation");
  const before = p.noDeprecation;
  p.noDeprecation = true;
  try {
    const b = p.binding("v8") as Partial<Flags> | undefined;
    return typeof b?.setFlagsFromString === "function"
      ? { setFlagsFromString: (f) => b.setFlagsFromString!(f) }
      : undefined;
  } catch {
    return undefined;
  } finally {
    if (own) p.noDeprecation = before;
    else delete p.noDeprecation;
  }
}

/** The user chose a budget (node option or NODE_OPTIONS): leave it alone. */
function userBudget(): boolean {
  return [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((a) => a.includes("interrupt-budget"));
}

/** Sets the larger budget, unless the user set one; false when it was not set. */
export async function startCold(): Promise<boolean> {
  if (userBudget()) return false;
  try {
    // The CommonJS bundle runs inside vm.Script (start.ts), where import() is not available: require.
    v8 = v8Flags() ??
      (typeof require === "function" ? require("node:v8") : await import("node:v8")) as Flags;
    v8.setFlagsFromString(COLD);
    (globalThis as Record<symbol, unknown>)[CHANGED] = true;
    return true;
  } catch {
    // Not supported here.
    return false;
  }
}

/** Goes back to V8's default budget: the run is long enough that optimising pays. */
export function warmUp(): void {
  if (v8 === undefined) return;
  try {
    v8.setFlagsFromString(DEFAULT_BUDGET);
    (globalThis as Record<symbol, unknown>)[CHANGED] = false;
  } catch {
    // Not supported here.
  }
}

/**
 * The cold run turned out short (`cli.ts`, after its first chunk): a larger budget still, so that V8 stops
 * optimising. The functions of the run tick at most once more before it ends; optimised code compiled now
 * would not pay for itself (on two cores it competes with the reads), and the run is the faster without it.
 */
export function stayCold(): void {
  if (v8 === undefined) return;
  try {
    v8.setFlagsFromString(SHORT);
  } catch {
    // Not supported here.
  }
}

/** Whether a copy of this module set a budget that is still in force. */
export function budgetChanged(): boolean {
  return (globalThis as Record<symbol, unknown>)[CHANGED] === true;
}
