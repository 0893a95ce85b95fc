// The fuzz targets: for each, its seeds (every vector and every bundled capture, in the target's input
// form), its mutator and its checks.
import * as fs from "node:fs";
import * as path from "node:path";
import { checkCapture, checkTcpLoss } from "./captures.ts";
import { fromHex } from "./check.ts";
import { checkCli } from "./cli.ts";
import { checkFrameDecoder, configOf, FRAME_DECODERS } from "./frames.ts";
import { checkHeaders } from "./headers.ts";
import { checkLimits } from "./limits.ts";
import { mutateBytes, mutateCapture, type Rng } from "./mutate.ts";
import { checkConversation, checkStreamDecoder, packConversation } from "./streams.ts";

export const ROOT: string = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");

/** One fuzz target. `run` throws a Violation when a check fails and adds what the input reached to `features`. */
export interface Target {
  readonly name: string;
  /** Inputs longer than this are cut after mutation. */
  readonly maxLength: number;
  /** Relative share of the campaign's time (the CLI and memory targets are slow per input). */
  readonly weight: number;
  /** False when shrinking the input is meaningless (the input's hash drives the check). */
  readonly minimize?: boolean;
  seeds(): Uint8Array[];
  mutate(rng: Rng, input: Uint8Array, corpus: readonly Uint8Array[]): Uint8Array;
  run(input: Uint8Array, features: Set<string>): void | Promise<void>;
}

interface VectorJson {
  decoder: string;
  hex: string;
  repeat?: { hex: string; times: number };
  context?: Record<string, unknown>;
}

let vectorCache: VectorJson[] | undefined;

/** Every vector of vectors/*.json (with its repeat expanded). */
export function vectors(): VectorJson[] {
  if (vectorCache !== undefined) return vectorCache;
  const dir = path.join(ROOT, "vectors");
  const out: VectorJson[] = [];
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith(".json") && x !== "schema.json").sort()) {
    const j = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as { vectors: VectorJson[] };
    for (const v of j.vectors) {
      out.push({ ...v, hex: v.hex + (v.repeat ? v.repeat.hex.repeat(v.repeat.times) : "") });
    }
  }
  return vectorCache = out;
}

function captureDir(): string {
  return path.join(ROOT, "vectors", "captures");
}

/** Every bundled capture file (pcap and pcapng), and the trace fixtures of the tests. */
export function captureFiles(): Uint8Array[] {
  const files: string[] = [];
  for (const dir of [captureDir(), path.join(ROOT, "test", "fixtures", "trace")]) {
    if (!fs.existsSync(dir)) continue;
    for (const f of fs.readdirSync(dir).sort()) if (/\.pcap(ng)?$/.test(f)) files.push(path.join(dir, f));
  }
  return files.map((f) => new Uint8Array(fs.readFileSync(f)));
}

/** The first records of a pcap file, up to about `max` bytes (small seeds mutate faster). */
function pcapPrefix(b: Uint8Array, max: number): Uint8Array | undefined {
  if (b.length <= max || b.length < 24) return undefined;
  const le = b[0] === 0xd4 || b[0] === 0x4d;
  const m = (b[0]! << 24 | b[1]! << 16 | b[2]! << 8 | b[3]!) >>> 0;
  if (![0xa1b2c3d4, 0xa1b23c4d, 0xd4c3b2a1, 0x4d3cb2a1].includes(m)) return undefined;
  let at = 24;
  while (at + 16 <= b.length) {
    const i = at + 8;
    const len = le
      ? (b[i]! | b[i + 1]! << 8 | b[i + 2]! << 16 | b[i + 3]! << 24) >>> 0
      : (b[i]! << 24 | b[i + 1]! << 16 | b[i + 2]! << 8 | b[i + 3]!) >>> 0;
    if (at + 16 + len > max) break;
    at += 16 + len;
  }
  return at > 24 ? b.slice(0, at) : undefined;
}

/**
 * Captures as seeds: each cut to its first 4 KiB and 16 KiB of records (small inputs mutate fast), and
 * whole when `whole` (or when it is pcapng, which is not cut).
 */
function captureSeeds(whole: boolean): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const c of captureFiles()) {
    const small = pcapPrefix(c, 4 * 1024);
    const p = pcapPrefix(c, 16 * 1024);
    if (small !== undefined) out.push(small);
    if (p !== undefined) out.push(p);
    if (whole || p === undefined) out.push(c);
  }
  return out;
}

/** The raw byte streams of the bundled captures, per direction. */
function streamFiles(dir: "c2s" | "s2c"): Uint8Array[] {
  const d = captureDir();
  if (!fs.existsSync(d)) return [];
  return fs.readdirSync(d).filter((f) => f.endsWith(`.${dir}.bin`)).sort()
    .map((f) => new Uint8Array(fs.readFileSync(path.join(d, f))));
}

function cut(b: Uint8Array, max: number): Uint8Array {
  return b.length > max ? b.subarray(0, max) : b;
}

function withCfg(cfg: number, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length + 1);
  out[0] = cfg;
  out.set(b, 1);
  return out;
}

const STREAM_MAX = 64 * 1024;

function frameTarget(name: string): Target {
  const d = FRAME_DECODERS.find((x) => x.name === name)!;
  return {
    name: `frame:${name}`,
    maxLength: 8192,
    weight: 1,
    seeds() {
      // Its own vectors first, then every other frame's bytes (a decoder must also survive them).
      const own = vectors().filter((v) =>
        v.decoder === name || (name === "reply" && /reply/.test(v.decoder))
      );
      const rest = vectors().filter((v) => !own.includes(v));
      return [...own, ...rest].map((v) =>
        withCfg(configOf(v.context ?? {}), fromHex(v.hex.slice(0, 2 * 8191)))
      );
    },
    mutate(rng, input, corpus) {
      if (rng.oneIn(8)) {
        const out = Uint8Array.from(input);
        if (out.length > 0) out[0] = rng.below(256);
        return out;
      }
      const body = mutateBytes(rng, input.subarray(1), corpus.map((c) => c.subarray(1)), this.maxLength - 1);
      return withCfg(input[0] ?? 0, body);
    },
    run(input, features) {
      checkFrameDecoder(d, input, features);
    },
  };
}

/** The frames of the vectors of some decoders, concatenated as a stream (valid ones in order). */
function vectorStream(decoders: RegExp, filter: (ctx: Record<string, unknown>) => boolean): Uint8Array {
  const hexes = vectors().filter((v) => decoders.test(v.decoder) && filter(v.context ?? {})).map((v) =>
    v.hex
  );
  return fromHex(hexes.join("").slice(0, 2 * (STREAM_MAX - 1)));
}

function streamTarget(side: "client" | "server"): Target {
  return {
    name: `stream:${side}`,
    maxLength: STREAM_MAX,
    weight: 2,
    seeds() {
      const own = streamFiles(side === "client" ? "c2s" : "s2c").flatMap((b) => [
        withCfg(0, cut(b, 2048)),
        withCfg(0, cut(b, 16 * 1024)),
      ]);
      const frames = side === "client"
        ? [
          withCfg(1, vectorStream(/^request$/, (c) => c.extendedHeaders !== true)),
          withCfg(3, vectorStream(/^request$/, (c) => c.extendedHeaders === true)),
          withCfg(4, vectorStream(/^option-request$/, () => true)),
        ]
        : [
          withCfg(2, vectorStream(/reply-chunk|simple-reply/, (c) => c.extendedHeaders !== true)),
          withCfg(3, vectorStream(/reply-chunk/, (c) => c.extendedHeaders === true)),
          withCfg(5, vectorStream(/reply-chunk/, () => true)),
          withCfg(4, vectorStream(/^option-reply$/, () => true)),
        ];
      return [...own, ...frames];
    },
    mutate(rng, input, corpus) {
      if (rng.oneIn(8)) {
        const out = Uint8Array.from(input);
        if (out.length > 0) out[0] = rng.below(16);
        return out;
      }
      return withCfg(
        input[0] ?? 0,
        mutateBytes(rng, input.subarray(1), corpus.map((c) => c.subarray(1)), STREAM_MAX),
      );
    },
    run(input, features) {
      checkStreamDecoder(side, input, features);
    },
  };
}

const conversationTarget: Target = {
  name: "conversation",
  maxLength: 2 * STREAM_MAX,
  weight: 2,
  seeds() {
    const c = streamFiles("c2s");
    const s = streamFiles("s2c");
    // The handshake and first requests of each capture (whole captures are slow to replay byte by byte).
    return c.flatMap((x, i) => [
      packConversation(0, cut(x, 2048), cut(s[i]!, 2048)),
      packConversation(0, cut(x, 12 * 1024), cut(s[i]!, 12 * 1024)),
    ]);
  },
  mutate(rng, input, corpus) {
    const cfg = rng.oneIn(10) ? rng.below(16) : input[0] ?? 0;
    const len = input.length >= 5
      ? ((input[1]! << 24) | (input[2]! << 16) | (input[3]! << 8) | input[4]!) >>> 0
      : 0;
    const rest = input.subarray(Math.min(5, input.length));
    const c = Math.min(len, rest.length);
    let c2s = rest.subarray(0, c);
    let s2c = rest.subarray(c);
    const others = corpus.map((x) => x.subarray(5));
    if (rng.oneIn(2)) c2s = mutateBytes(rng, c2s, others, STREAM_MAX);
    else s2c = mutateBytes(rng, s2c, others, STREAM_MAX);
    if (rng.oneIn(20)) [c2s, s2c] = [s2c, c2s];
    return packConversation(cfg, c2s, s2c);
  },
  run(input, features) {
    checkConversation(input, features);
  },
};

const captureTarget: Target = {
  name: "capture",
  maxLength: 64 * 1024,
  weight: 2,
  seeds: () => captureSeeds(false),
  mutate(rng, input, corpus) {
    return mutateCapture(rng, input, corpus, this.maxLength);
  },
  run(input, features) {
    checkCapture(input, features);
  },
};

const tcpLossTarget: Target = {
  name: "tcp-reorder",
  maxLength: 320 * 1024,
  weight: 1,
  minimize: false,
  seeds: () => captureSeeds(true).filter((c) => c[0] === 0xd4 || c[0] === 0xa1),
  // The packets' bytes stay as they are: only which packets are kept and their order change (by the
  // input's hash), so the mutation is a harmless edit of the file header's unused fields.
  mutate(rng, input) {
    const out = Uint8Array.from(input);
    if (out.length >= 16) out.set([rng.below(256), rng.below(256), rng.below(256), rng.below(256)], 8);
    return out;
  },
  run(input, features) {
    checkTcpLoss(input, features);
  },
};

const headersTarget: Target = {
  name: "headers-into",
  maxLength: 256,
  weight: 1,
  seeds: () =>
    vectors().filter((v) => /request|reply/.test(v.decoder) && !/option/.test(v.decoder))
      .map((v) => withCfg(v.context?.extendedHeaders === true ? 1 : 0, fromHex(v.hex.slice(0, 2 * 255)))),
  mutate(rng, input, corpus) {
    const cfg = rng.oneIn(8) ? rng.below(2) : input[0] ?? 0;
    return withCfg(cfg, mutateBytes(rng, input.subarray(1), corpus.map((c) => c.subarray(1)), 255));
  },
  run(input, features) {
    checkHeaders(input, features);
  },
};

/** Options of the CLI target: `bundleEvery` runs also go through the built bundle (0: never). */
export const cliSettings: { bundleEvery: number } = { bundleEvery: 0 };

const cliTarget: Target = {
  name: "cli",
  maxLength: 320 * 1024,
  weight: 1,
  seeds: () => captureSeeds(true),
  mutate(rng, input, corpus) {
    return mutateCapture(rng, input, corpus, this.maxLength);
  },
  run(input, features) {
    return checkCli(input, features, cliSettings.bundleEvery);
  },
};

const limitsTarget: Target = {
  name: "limits",
  maxLength: 8,
  weight: 1,
  minimize: false,
  seeds: () => Array.from({ length: 8 }, (_, i) => Uint8Array.of(i, i * 7, i * 13, 1)),
  mutate(rng) {
    return Uint8Array.from({ length: 8 }, () => rng.below(256));
  },
  run(input, features) {
    checkLimits(input, features);
  },
};

/** Every target, by name. */
export const TARGETS: readonly Target[] = [
  ...FRAME_DECODERS.map((d) => frameTarget(d.name)),
  headersTarget,
  streamTarget("client"),
  streamTarget("server"),
  conversationTarget,
  captureTarget,
  tcpLossTarget,
  cliTarget,
  limitsTarget,
];
