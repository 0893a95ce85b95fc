// Measurement helpers shared by the benchmark worker: paired, interleaved timing of two loops in one
// process (mitata's `measure()` takes the samples), and allocation per operation from the V8 heap counters.
import process from "node:process";
import { measure } from "mitata";

/** A benchmark loop: runs the operation `n` times and returns a value derived from the results. */
export type Loop = (n: number) => number;

/** Keeps loop results observable so that the optimiser cannot drop the work. */
export const sink: { value: number } = { value: 0 };

/** How the paired timing of {@link timePairs} is laid out. */
export interface TimingOptions {
  /** Duration of one sample (one call of the loop with a calibrated `n`), in milliseconds. */
  readonly batchMs: number;
  /** Number of interleaved rounds (one mitata `measure()` of each side of every pair per round). */
  readonly rounds: number;
  /** Minimum time mitata spends sampling one side in one round, in milliseconds. */
  readonly roundMs: number;
}

/**
 * 12 rounds of 80 ms per side: every process samples each side for about a second, spread over two seconds
 * of wall time. On this machine kind, load from other tenants comes in bursts of 0.1 to 1 s that slow an
 * allocating loop by up to 2.5x (an arithmetic loop by 5%); a process of 120 ms could fall entirely inside
 * one, a process of two seconds hardly can (see bench/RESULTS.md, "Stability").
 */
export const DEFAULT_TIMING: TimingOptions = { batchMs: 5, rounds: 12, roundMs: 80 };

function now(): number {
  return performance.now();
}

/** Iterations per call so that one call of `loop` lasts about `ms` (also warms the loop up). */
function calibrate(loop: Loop, ms: number): number {
  let n = 1;
  for (;;) {
    const t0 = now();
    sink.value ^= loop(n);
    const dt = now() - t0;
    if (dt >= ms) break;
    n = dt < ms / 16 ? n * 8 : Math.ceil((n * ms * 1.3) / Math.max(dt, 0.001));
  }
  // The call that first lasted `ms` may have included a compilation or a GC: scale by the fastest of three
  // calls, twice, so that `n` is not far too small.
  for (let pass = 0; pass < 2; pass++) {
    let best = Infinity;
    for (let k = 0; k < 3; k++) {
      const t0 = now();
      sink.value ^= loop(n);
      best = Math.min(best, now() - t0);
    }
    n = Math.max(1, Math.ceil((n * ms * 1.1) / Math.max(best, 0.001)));
  }
  return n;
}

/** Median of a list of numbers. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Lower quartile: noise from other processes only ever adds time, so the lower quartile of the samples
 * estimates the undisturbed speed better than the median while still including GC pauses that hit every
 * sample. */
export function lowerQuartile(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * 0.25;
  const lo = Math.floor(pos);
  const hi = Math.min(s.length - 1, lo + 1);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

/** Per-operation times (ns) of two loops measured in alternating rounds, and their lower quartiles. */
export interface PairTiming {
  readonly aNs: number;
  readonly bNs: number;
  /** Every sample of side A, in ns per operation (mitata's, pooled over the rounds). */
  readonly aSamples: readonly number[];
  readonly bSamples: readonly number[];
  /** The same samples by round (for analysis: `BENCH_DUMP=1` puts them in the worker's output). */
  readonly aRounds: readonly (readonly number[])[];
  readonly bRounds: readonly (readonly number[])[];
}

/** One pair for {@link timePairs}: two loops and the duration of one sample. */
export interface PairPlan {
  readonly a: Loop;
  readonly b: Loop;
  readonly batchMs?: number;
}

/** The full GC mitata runs before each `measure()` (outside the timed samples). */
function fullGc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g === undefined) throw new Error("timing needs --expose-gc (node) / --v8-flags=--expose-gc (deno)");
  g();
}

/** Samples of one side for one round, in ns per operation: mitata's `measure()` of one call of `loop(n)`. */
async function sampleRound(loop: Loop, n: number, roundMs: number): Promise<number[]> {
  const stats = await measure(() => {
    sink.value ^= loop(n);
  }, {
    min_cpu_time: roundMs * 1e6,
    min_samples: 4,
    warmup_samples: 1,
    // One sample is one call of `loop(n)`: never let mitata batch the calls of a sample.
    batch_threshold: 0,
    gc: fullGc,
  });

  return stats.samples.map((ns) => ns / n);
}

/**
 * Times pairs of loops with mitata's `measure()` as the sampling engine, in the same process and
 * interleaved: every round measures each side of every pair once (A then B, and B then A in the next
 * round), so that frequency changes and neighbours' noise hit both sides alike. One mitata sample is one
 * call of the loop with `n` calibrated to {@link TimingOptions.batchMs}; the per-process figure of a side
 * is the lower quartile of all its samples (see {@link lowerQuartile}).
 */
export async function timePairs(
  plans: readonly PairPlan[],
  opts: TimingOptions = DEFAULT_TIMING,
): Promise<PairTiming[]> {
  const sizes = plans.map((p) => {
    const ms = p.batchMs ?? opts.batchMs;
    const na = calibrate(p.a, ms);
    const nb = calibrate(p.b, ms);
    return [na, nb] as const;
  });
  const as: number[][][] = plans.map(() => []);
  const bs: number[][][] = plans.map(() => []);
  for (let r = 0; r < opts.rounds; r++) {
    for (let i = 0; i < plans.length; i++) {
      const p = plans[i]!;
      const [na, nb] = sizes[i]!;
      if (r % 2 === 0) {
        as[i]!.push(await sampleRound(p.a, na, opts.roundMs));
        bs[i]!.push(await sampleRound(p.b, nb, opts.roundMs));
      } else {
        bs[i]!.push(await sampleRound(p.b, nb, opts.roundMs));
        as[i]!.push(await sampleRound(p.a, na, opts.roundMs));
      }
    }
  }
  return plans.map((_, i) => {
    const a = as[i]!.flat();
    const b = bs[i]!.flat();
    return {
      aNs: lowerQuartile(a),
      bNs: lowerQuartile(b),
      aSamples: a,
      bSamples: b,
      aRounds: as[i]!,
      bRounds: bs[i]!,
    };
  });
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
