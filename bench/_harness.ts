// Measurement helpers shared by the benchmark worker: paired, interleaved timing of two loops in one
// process, and allocation per operation from the V8 heap counters.
import process from "node:process";

/** A benchmark loop: runs the operation `n` times and returns a value derived from the results. */
export type Loop = (n: number) => number;

/** Keeps loop results observable so that the optimiser cannot drop the work. */
export const sink: { value: number } = { value: 0 };

export interface TimingOptions {
  /** Minimum duration of one timed batch, in milliseconds. */
  readonly batchMs: number;
  /** Number of interleaved rounds (one batch of each loop per round). */
  readonly rounds: number;
}

export const DEFAULT_TIMING: TimingOptions = { batchMs: 4, rounds: 15 };

function now(): number {
  return performance.now();
}

/** Iterations per batch so that one batch of `loop` lasts at least `ms` (also warms the loop up). */
function calibrate(loop: Loop, ms: number): number {
  let n = 1;
  for (;;) {
    const t0 = now();
    sink.value ^= loop(n);
    const dt = now() - t0;
    if (dt >= ms) {
      // Aim a little above `ms` so that timer resolution never matters.
      return Math.max(1, Math.ceil((n * ms * 1.2) / dt));
    }
    n = dt < ms / 16 ? n * 8 : Math.ceil((n * ms * 1.3) / Math.max(dt, 0.001));
  }
}

function timeBatch(loop: Loop, n: number): number {
  const t0 = now();
  sink.value ^= loop(n);
  return ((now() - t0) * 1e6) / n;
}

/** Median of a list of numbers. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Lower quartile: noise from other processes only ever adds time, so the lower quartile of the batches
 * estimates the undisturbed speed better than the median while still including GC pauses that hit every
 * batch. */
export function lowerQuartile(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * 0.25;
  const lo = Math.floor(pos);
  const hi = Math.min(s.length - 1, lo + 1);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

/** Per-operation times (ns) of two loops measured in alternating batches, and their lower quartiles. */
export interface PairTiming {
  readonly aNs: number;
  readonly bNs: number;
  readonly aSamples: readonly number[];
  readonly bSamples: readonly number[];
}

/**
 * Times two loops in the same process, interleaved (A B, then B A, ...) so that frequency changes and
 * neighbours' noise hit both sides alike. Returns the lower quartile of the batches' ns per operation of
 * each (see {@link lowerQuartile}).
 */
export function timePair(a: Loop, b: Loop, opts: TimingOptions = DEFAULT_TIMING): PairTiming {
  const na = calibrate(a, opts.batchMs);
  const nb = calibrate(b, opts.batchMs);
  // Warm-up batches at the final size, untimed.
  for (let i = 0; i < 3; i++) {
    timeBatch(a, na);
    timeBatch(b, nb);
  }
  const as: number[] = [];
  const bs: number[] = [];
  for (let r = 0; r < opts.rounds; r++) {
    if (r % 2 === 0) {
      as.push(timeBatch(a, na));
      bs.push(timeBatch(b, nb));
    } else {
      bs.push(timeBatch(b, nb));
      as.push(timeBatch(a, na));
    }
  }
  return { aNs: lowerQuartile(as), bNs: lowerQuartile(bs), aSamples: as, bSamples: bs };
}

/** One pair for {@link timePairs}: two loops and their batch duration. */
export interface PairPlan {
  readonly a: Loop;
  readonly b: Loop;
  readonly batchMs?: number;
}

/**
 * Times many pairs round-robin: every round times one batch of each side of every pair (A B, then B A in
 * the next round). A burst of load from other processes then spoils one round of every pair instead of
 * every round of one pair, and the lower quartile over the rounds leaves it out.
 */
export function timePairs(plans: readonly PairPlan[], rounds: number = DEFAULT_TIMING.rounds): PairTiming[] {
  const sizes = plans.map((p) => {
    const ms = p.batchMs ?? DEFAULT_TIMING.batchMs;
    const na = calibrate(p.a, ms);
    const nb = calibrate(p.b, ms);
    for (let i = 0; i < 3; i++) {
      timeBatch(p.a, na);
      timeBatch(p.b, nb);
    }
    return [na, nb] as const;
  });
  const as: number[][] = plans.map(() => []);
  const bs: number[][] = plans.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < plans.length; i++) {
      const p = plans[i]!;
      const [na, nb] = sizes[i]!;
      if (r % 2 === 0) {
        as[i]!.push(timeBatch(p.a, na));
        bs[i]!.push(timeBatch(p.b, nb));
      } else {
        bs[i]!.push(timeBatch(p.b, nb));
        as[i]!.push(timeBatch(p.a, na));
      }
    }
  }
  return plans.map((_, i) => ({
    aNs: lowerQuartile(as[i]!),
    bNs: lowerQuartile(bs[i]!),
    aSamples: as[i]!,
    bSamples: bs[i]!,
  }));
}

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g === undefined) {
    throw new Error("allocation measurement needs --expose-gc (node) / --v8-flags=--expose-gc (deno)");
  }
  g();
  g();
}

/** Whether allocation can be measured (the runtime was started with --expose-gc). */
export function canMeasureAllocation(): boolean {
  return typeof (globalThis as { gc?: unknown }).gc === "function";
}

function heapUsed(): number {
  return process.memoryUsage().heapUsed;
}

/** Result of {@link allocationPerOp}. */
export interface AllocationResult {
  /** Bytes of V8 heap allocated per operation (smallest of the trials). */
  readonly bytesPerOp: number;
  /** Operations per trial. */
  readonly n: number;
  /** Trials that could be used (a trial in which the heap shrank had a GC inside and is dropped). */
  readonly trials: number;
}

/** The V8 flags {@link allocationPerOp} needs: gc() and a fixed 64 MiB young generation. */
export const ALLOCATION_V8_FLAGS: readonly string[] = [
  "--expose-gc",
  "--max-semi-space-size=64",
  "--min-semi-space-size=64",
];

/** Most bytes one trial may allocate: well inside the fixed 64 MiB semi-space, so no scavenge runs. */
const TRIAL_BUDGET = 16_000_000;

/**
 * Bytes of V8 heap allocated per operation. Method (run with {@link ALLOCATION_V8_FLAGS}): warm the loop
 * up until it is optimised; then, per trial, full GC, read `heapUsed`, run the loop `n` times, read
 * `heapUsed` again without collecting. With a fixed 64 MiB semi-space and at most 16 MB allocated per
 * trial no scavenge runs inside the loop, so the difference is every byte the loop allocated
 * (young-generation objects count as soon as they are bump-allocated, small typed arrays live on the heap).
 * `n` is 1,000,000 for a loop that allocates nothing, so a zero result has a resolution of about 10^-4
 * bytes per operation; the smallest difference of 5 trials is used (reading the counters costs a few
 * hundred bytes per trial, which is why the result is ~0, not 0).
 */
export function allocationPerOp(loop: Loop, maxN = 1_000_000): AllocationResult {
  // Warm-up: at least 200 ms of calls, so that optimised code (and its code objects) exists before measuring.
  let k = 1000;
  for (let spent = 0; spent < 200; k = Math.min(k * 2, maxN)) {
    const t0 = now();
    sink.value ^= loop(k);
    spent += now() - t0;
  }
  const trial = (n: number): number[] => {
    const deltas: number[] = [];
    for (let t = 0; t < 5; t++) {
      gc();
      const h0 = heapUsed();
      sink.value ^= loop(n);
      const h1 = heapUsed();
      if (h1 >= h0) deltas.push(h1 - h0);
    }
    return deltas;
  };
  const probe = trial(1000);
  const perOp = probe.length > 0 ? Math.min(...probe) / 1000 : NaN;
  const n = Number.isFinite(perOp)
    ? Math.max(1000, Math.min(maxN, Math.floor(TRIAL_BUDGET / Math.max(perOp, 16))))
    : 1000;
  const deltas = trial(n);
  if (deltas.length === 0) return { bytesPerOp: NaN, n, trials: 0 };
  return { bytesPerOp: Math.min(...deltas) / n, n, trials: deltas.length };
}
