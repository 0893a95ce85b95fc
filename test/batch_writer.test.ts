import { expect, test } from "vitest";
import { type BatchSink, BatchWriter } from "../examples/batch_writer.ts";

/** A socket stand-in: records every write; `sync` ones are in the kernel at once, others on `complete()`. */
class FakeSink implements BatchSink {
  readonly writes: { bytes: Uint8Array; copy: Uint8Array; done: (() => void) | undefined }[] = [];
  readonly calls: string[] = [];
  #pending: { bytes: Uint8Array; done: (() => void) | undefined }[] = [];
  readonly sync: boolean;
  constructor(sync: boolean) {
    this.sync = sync;
  }
  cork(): void {
    this.calls.push("cork");
  }
  uncork(): void {
    this.calls.push("uncork");
  }
  write(bytes: Uint8Array, done?: () => void): boolean {
    this.calls.push(`write ${bytes.length}`);
    this.writes.push({ bytes, copy: bytes.slice(), done });
    if (this.sync) done?.();
    else this.#pending.push({ bytes, done });
    return true;
  }
  get writableLength(): number {
    return this.#pending.reduce((n, p) => n + p.bytes.length, 0);
  }
  /** The kernel takes every pending write, in order. */
  complete(): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) p.done?.();
  }
  /** Everything written, in order, as it was when written. */
  output(): number[] {
    return this.writes.flatMap((w) => [...w.copy]);
  }
}

const bytes = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);
/** Whether a written view still holds what it held when written (a plain loop: toEqual is slow on MiBs). */
const unchanged = (w: { bytes: Uint8Array; copy: Uint8Array }): boolean =>
  w.bytes.length === w.copy.length && w.bytes.every((b, i) => b === w.copy[i]);

test("BatchWriter writes small pieces as one view of its slab and large ones as they are, in order, in one writev", () => {
  const sink = new FakeSink(true);
  const out = new BatchWriter(sink);
  const big = bytes(64 * 1024, 9);
  out.add([bytes(20, 1), bytes(4096, 2), bytes(16, 3)]);
  out.add([bytes(32, 4), big, bytes(20, 5)]);
  out.flush();
  expect(sink.calls).toEqual([
    "cork",
    `write ${20 + 4096 + 16 + 32}`,
    `write ${64 * 1024}`,
    "write 20",
    "uncork",
  ]);
  expect(sink.writes[1]!.bytes).toBe(big);
  expect(sink.output()).toEqual([
    ...bytes(20, 1),
    ...bytes(4096, 2),
    ...bytes(16, 3),
    ...bytes(32, 4),
    ...big,
    ...bytes(20, 5),
  ]);
  // One piece: a plain write, no cork; nothing queued: no write at all.
  out.add([bytes(16, 6)]);
  out.flush();
  out.flush();
  expect(sink.calls.slice(5)).toEqual(["write 16"]);
});

test("BatchWriter reuses its slab from the start when the socket took every byte", () => {
  const sink = new FakeSink(true);
  const out = new BatchWriter(sink);
  for (let i = 0; i < 100; i++) {
    out.add([bytes(20, i), bytes(4096, i)]);
    out.flush();
  }
  const first = sink.writes[0]!.bytes;
  for (const w of sink.writes) {
    expect(w.bytes.buffer).toBe(first.buffer);
    expect(w.bytes.byteOffset).toBe(0);
  }
});

test("BatchWriter never changes bytes the socket still holds, and reuses a slab once its last flush is written", () => {
  const sink = new FakeSink(false);
  const out = new BatchWriter(sink);
  // 3 MiB of 4 KiB replies while the socket takes nothing: a dozen slabs, none may be overwritten.
  for (let i = 0; i < 768; i++) {
    out.add([bytes(20, i & 0xff), bytes(4096, (i * 7) & 0xff)]);
    if (i % 10 === 9) out.flush();
  }
  out.flush();
  for (const w of sink.writes) expect(unchanged(w)).toBe(true);
  const slabs = new Set(sink.writes.map((w) => w.bytes.buffer));
  expect(slabs.size).toBeGreaterThan(10);
  // The socket takes it all; from now on the writer's slabs are ones it used before.
  sink.complete();
  const before = sink.writes.length;
  for (let i = 0; i < 200; i++) {
    out.add([bytes(20, 1), bytes(4096, 2)]);
    if (i % 10 === 9) out.flush();
  }
  out.flush();
  for (const w of sink.writes.slice(before)) {
    expect(slabs.has(w.bytes.buffer)).toBe(true);
    expect(unchanged(w)).toBe(true);
  }
});
