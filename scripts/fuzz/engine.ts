// The campaign loop of one target: a corpus seeded with every vector and capture, grown with each mutated
// input that reaches a behaviour not seen before (a frame kind, a finding's rule, an error's rule, a notice:
// "features", the decoders' own account of which paths the input took), findings deduplicated by check and
// message shape, and each new one minimized.
import { startInput, takeDeferred, Violation } from "./check.ts";
import { type KnownDefect, knownDefect } from "./known.ts";
import { Rng } from "./mutate.ts";
import type { Target } from "./targets.ts";

/** Something the campaign found. */
export interface FuzzFinding {
  readonly target: string;
  readonly check: string;
  readonly message: string;
  /** The (minimized) input. */
  readonly input: Uint8Array;
  /** The known defect of issue 15 section 1 this is, if any. */
  readonly known: KnownDefect | undefined;
  /** How many inputs showed this same finding (same check, same message shape). */
  count: number;
}

/** What one target's campaign did. */
export interface TargetStats {
  readonly target: string;
  inputs: number;
  ms: number;
  corpus: number;
  features: number;
  readonly findings: FuzzFinding[];
}

export interface CampaignOptions {
  readonly seed: number;
  /** Stop after this many mutated inputs (seeds not counted). */
  readonly iterations?: number;
  /** Stop after this many milliseconds. */
  readonly timeMs?: number;
  /** Time spent minimizing each new finding, at most. */
  readonly minimizeMs?: number;
  /** Called for each new finding (already minimized). */
  readonly onFinding?: (f: FuzzFinding) => void;
  /** Called now and then with the stats so far. */
  readonly onProgress?: (s: TargetStats) => void;
}

/** The shape of a message: numbers and hex runs blurred, so that one defect is one finding. */
export function signature(check: string, message: string): string {
  const first = message.split("\n")[0]!;
  return `${check}|${first.replace(/0x[0-9a-f]+/gi, "H").replace(/[0-9]+/g, "N").slice(0, 160)}`;
}

/**
 * Runs one input; returns the Violation it raises (a harness exception is a finding too), else the known
 * defect it showed while its other checks passed, or undefined.
 */
export async function runOne(
  t: Target,
  input: Uint8Array,
  features: Set<string>,
): Promise<Violation | undefined> {
  try {
    startInput();
    await t.run(input, features);
    return takeDeferred();
  } catch (e) {
    if (e instanceof Violation) return e;
    const err = e as Error;
    return new Violation("harness-error", `${err?.name}: ${err?.message}\n${err?.stack ?? ""}`);
  }
}

/**
 * Shrinks an input while it still raises the same check (and is the same known defect, or none): chunks
 * removed, halving in size, then bytes zeroed; within `ms` milliseconds.
 */
export async function minimize(t: Target, input: Uint8Array, check: string, ms: number): Promise<Uint8Array> {
  const until = performance.now() + ms;
  const want = check;
  const still = async (b: Uint8Array) => {
    const v = await runOne(t, b, new Set());
    return v !== undefined && v.check === want;
  };
  let best = input;
  for (let size = best.length >> 1; size >= 1 && performance.now() < until; size = size >> 1) {
    for (let at = 0; at + size <= best.length && performance.now() < until;) {
      const cand = new Uint8Array(best.length - size);
      cand.set(best.subarray(0, at));
      cand.set(best.subarray(at + size), at);
      if (await still(cand)) best = cand;
      else at += size;
    }
  }
  for (let i = 0; i < best.length && performance.now() < until; i++) {
    if (best[i] === 0) continue;
    const cand = Uint8Array.from(best);
    cand[i] = 0;
    if (await still(cand)) best = cand;
  }
  return best;
}

/** One target's campaign. */
export async function fuzzTarget(t: Target, o: CampaignOptions): Promise<TargetStats> {
  const rng = new Rng(o.seed);
  const stats: TargetStats = { target: t.name, inputs: 0, ms: 0, corpus: 0, features: 0, findings: [] };
  const seen = new Set<string>();
  const bySignature = new Map<string, FuzzFinding>();
  const corpus: Uint8Array[] = [];
  const start = performance.now();
  const deadline = o.timeMs === undefined ? Infinity : start + o.timeMs;
  const maxInputs = o.iterations ?? Infinity;
  const minimizeMs = o.minimizeMs ?? 5000;

  const handle = async (input: Uint8Array, v: Violation) => {
    // A known defect is one finding per check and target (it shows in many shapes); anything else is one
    // finding per message shape.
    const k = knownDefect({ target: t.name, check: v.check, message: v.message });
    const sig = k !== undefined ? `${k.id}|${v.check}` : signature(v.check, v.message);
    const old = bySignature.get(sig);
    if (old !== undefined) {
      old.count++;
      return;
    }
    // Only a finding that shows again on a replay is kept.
    const again = await runOne(t, input, new Set());
    if (again === undefined || again.check !== v.check) return;
    // Known defects get a shorter minimization: they are reported, not investigated here.
    const small = v.check === "slow" || t.minimize === false
      ? input
      : await minimize(t, input, v.check, k !== undefined ? minimizeMs / 5 : minimizeMs);
    const final = (await runOne(t, small, new Set())) ?? v;
    const f: FuzzFinding = {
      target: t.name,
      check: final.check,
      message: final.message,
      input: small,
      known: knownDefect({ target: t.name, check: final.check, message: final.message }),
      count: 1,
    };
    bySignature.set(sig, f);
    stats.findings.push(f);
    o.onFinding?.(f);
  };

  for (const s of t.seeds()) {
    const input = s.length > t.maxLength ? s.subarray(0, t.maxLength) : s;
    const features = new Set<string>();
    const v = await runOne(t, input, features);
    if (v !== undefined) await handle(input, v);
    let fresh = false;
    for (const x of features) if (!seen.has(x)) (seen.add(x), fresh = true);
    if (fresh || corpus.length < 64) corpus.push(input);
  }

  let lastProgress = performance.now();
  while (stats.inputs < maxInputs && performance.now() < deadline) {
    // Newer corpus entries (they found something new) a little more often.
    const parent = rng.oneIn(3) && corpus.length > 8
      ? corpus[corpus.length - 1 - rng.below(Math.min(32, corpus.length))]!
      : corpus[rng.below(corpus.length)]!;
    const input = t.mutate(rng, parent, corpus);
    const features = new Set<string>();
    const v = await runOne(t, input, features);
    stats.inputs++;
    if (v !== undefined) await handle(input, v);
    let fresh = false;
    for (const x of features) if (!seen.has(x)) (seen.add(x), fresh = true);
    // An input that only shows a known defect (deferred) still explores: it may join the corpus.
    if (fresh && (v === undefined || v.deferred) && corpus.length < 5000) corpus.push(input);
    if (o.onProgress !== undefined && performance.now() - lastProgress > 10_000) {
      lastProgress = performance.now();
      stats.ms = lastProgress - start;
      stats.corpus = corpus.length;
      stats.features = seen.size;
      o.onProgress(stats);
    }
  }
  stats.ms = performance.now() - start;
  stats.corpus = corpus.length;
  stats.features = seen.size;
  return stats;
}
