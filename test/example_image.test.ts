import { expect, test } from "vitest";
import { SparseImage } from "../examples/server.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 4 * KiB;
const DATA = 0;
const ZERO = 2;
const HOLE = 3;

/** A small deterministic generator (tests must not depend on Math.random). */
function random(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Every block's status agrees with its bytes, and the extents and init flags with the statuses. */
function checkConsistent(image: SparseImage, bytes: Uint8Array): void {
  const statuses: number[] = [];
  for (let i = 0; i < image.blockCount; i++) {
    const s = image.statusOf(i);
    const block = bytes.subarray(i * BLOCK, (i + 1) * BLOCK);
    const zero = block.every((b) => b === 0);
    expect([DATA, ZERO, HOLE]).toContain(s);
    expect(s === DATA ? !zero : zero).toBe(true);
    statuses.push(s);
  }
  const flags = image.initFlags();
  expect((flags & 1) !== 0).toBe(statuses.includes(HOLE)); // NBD_INIT_SPARSE
  expect((flags & 2) !== 0).toBe(!statuses.includes(DATA)); // NBD_INIT_ZERO
  for (const maxExtent of [3 * BLOCK, 2 ** 32 - BLOCK]) {
    const extents = image.extents(0, image.size, maxExtent, 1 << 20);
    let pos = 0;
    for (const [k, e] of extents.entries()) {
      expect(e.length).toBeGreaterThan(0);
      expect(e.length).toBeLessThanOrEqual(maxExtent);
      for (let i = pos / BLOCK; i < (pos + e.length) / BLOCK; i++) expect(statuses[i]).toBe(e.status);
      // Runs are as long as they may be: a shorter one is followed by another of the same status only
      // when cut by maxExtent.
      const next = extents[k + 1];
      if (next !== undefined && next.status === e.status) expect(e.length).toBeGreaterThan(maxExtent - BLOCK);
      pos += e.length;
    }
    expect(pos).toBe(image.size);
  }
}

test("SparseImage (examples/server.ts) reads back what was written, zeroed and trimmed, across chunks", () => {
  const size = 3 * MiB + 5 * BLOCK;
  const image = new SparseImage(size);
  const bytes = new Uint8Array(size);
  const r = random(7);
  const range = (): [number, number] => {
    let offset = Math.floor(r() * size);
    let length = 1 + Math.floor(r() * (r() < 0.3 ? 2 * MiB : 3 * BLOCK));
    if (r() < 0.5) {
      offset -= offset % BLOCK;
      length = Math.max(BLOCK, length - (length % BLOCK));
    }
    return [offset, Math.min(length, size - offset)];
  };
  for (let k = 0; k < 300; k++) {
    const [offset, length] = range();
    const op = r();
    if (op < 0.45) {
      const data = new Uint8Array(length);
      if (r() < 0.8) {
        for (let i = 0; i < length; i += 1 + Math.floor(r() * 3000)) data[i] = 1 + (k & 0x7f);
      }
      image.write(offset, data);
      bytes.set(data, offset);
    } else if (op < 0.9) {
      const punch = r() < 0.5;
      const zero = r() < 0.5;
      image.zero(offset, length, punch, zero);
      // Whole blocks are zeroed always, the partial ones at the ends only when `zero`.
      const first = Math.ceil(offset / BLOCK) * BLOCK;
      const end = Math.floor((offset + length) / BLOCK) * BLOCK;
      if (zero) bytes.fill(0, offset, offset + length);
      else if (end > first) bytes.fill(0, first, end);
    }
    const [at, n] = range();
    expect(sameBytes(image.read(at, n), bytes.subarray(at, at + n))).toBe(true);
  }
  checkConsistent(image, bytes);
  expect(sameBytes(image.read(0, size), bytes)).toBe(true);
});

test("SparseImage statuses: data, NO_HOLE zeroes, holes from TRIM and from zero writes", () => {
  const image = new SparseImage(2 * MiB);
  expect(image.initFlags()).toBe(3);
  image.write(MiB - BLOCK, new Uint8Array(2 * BLOCK).fill(1)); // the last block of chunk 0, the first of chunk 1
  expect([image.statusOf(255), image.statusOf(256), image.statusOf(257)]).toEqual([DATA, DATA, HOLE]);
  image.write(0, new Uint8Array(BLOCK)); // zeroes into a hole: still a hole
  expect(image.statusOf(0)).toBe(HOLE);
  image.zero(BLOCK, BLOCK, false, true); // WRITE_ZEROES with NO_HOLE: allocated zeroes
  expect(image.statusOf(1)).toBe(ZERO);
  image.write(MiB - BLOCK, new Uint8Array(BLOCK)); // data overwritten with zeroes: allocated zeroes
  expect(image.statusOf(255)).toBe(ZERO);
  image.zero(MiB, 10, true, false); // TRIM of part of a block: nothing
  expect(image.statusOf(256)).toBe(DATA);
  image.zero(MiB, BLOCK, true, false); // TRIM of the whole block: a hole, reading as zeroes
  expect(image.statusOf(256)).toBe(HOLE);
  expect(image.read(MiB, BLOCK).every((b) => b === 0)).toBe(true);
  expect(image.extents(0, 2 * MiB, 2 ** 32, 100)).toEqual([
    { length: BLOCK, status: HOLE },
    { length: BLOCK, status: ZERO },
    { length: MiB - 3 * BLOCK, status: HOLE },
    { length: BLOCK, status: ZERO },
    { length: MiB, status: HOLE },
  ]);
  expect(image.initFlags()).toBe(3);
});

test("SparseImage answers a read inside one chunk with a view of the image, and a read across chunks with a copy", () => {
  const image = new SparseImage(4 * MiB);
  image.write(0, new Uint8Array(2 * MiB).fill(7));
  const a = image.read(4096, 256 * KiB);
  const b = image.read(512 * KiB, 4096);
  expect(a.buffer).toBe(b.buffer);
  expect(a.byteOffset).toBe(4096);
  image.write(4096, new Uint8Array([9]));
  expect(a[0]).toBe(9);
  const across = image.read(MiB - 4096, 8192);
  expect(across.buffer).not.toBe(a.buffer);
  expect(across.every((x) => x === 7)).toBe(true);
  // Holes read as zeroes, from chunks never written too.
  expect(image.read(3 * MiB, MiB).every((x) => x === 0)).toBe(true);
});
