/**
 * V8's interrupt budget for the command line: how much bytecode a function runs before V8 considers
 * optimising it (66 KB by default). A run over a capture of few, large packets (a 100 MB loopback capture has
 * 4 569) ends before most optimised code pays for its compiling, which then costs a third of the run's CPU
 * time on two cores. Runs start with four times the budget (the entry points, before any code of the
 * command runs) and go back to the default once the capture turns out to be long (`cli.ts`,
 * `WARM_PACKETS`). Not when the user set the budget; a runtime without V8 flags keeps its own.
 *
 * The code cache of `start.ts` is checked against V8's flags: it is read and written with the starting
 * budget ({@link restoreColdBudget} before writing), or every run would reject the previous one's cache.
 *
 * @module
 */
import process from "node:process";
import * as v8 from "node:v8";

const COLD = "--interrupt-budget=270336";
const DEFAULT = "--interrupt-budget=67584";

/** The user chose a budget (node option or NODE_OPTIONS): leave it alone. */
const userBudget = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((a) =>
  a.includes("interrupt-budget")
);

function set(flag: string): void {
  if (userBudget) return;
  try {
    v8.setFlagsFromString(flag);
  } catch {
    // Not supported here.
  }
}

/** Sets the starting (larger) budget. */
export function startCold(): void {
  set(COLD);
}

/** Sets the starting budget again, as the code cache was read with it. */
export function restoreColdBudget(): void {
  set(COLD);
}

/** Goes back to V8's default budget: the run is long enough that optimising pays. */
export function warmUp(): void {
  set(DEFAULT);
}

/** Whether the command line changes the budget at all. */
export const budgetIsOurs: boolean = !userBudget;
