// bin/_readahead.ts: reads ahead on the thread pool keep the file's bytes in order, also when a read comes
// back short before the end (a capture file still being written): the reads queued after it are dropped
// and reading goes on from where the short one ended.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { expect, test } from "vitest";
import { ChunkPool, ReadAhead } from "../bin/_readahead.ts";

const holder = { release() {}, pushes: 0, oldestRetainedChunk: 0 };

test("a short read drops the reads after it and the next read starts where it ended", async () => {
  const S = 4096;
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "nbd-readahead-")), "growing.pcap");
  const bytes = Uint8Array.from({ length: 3 * S }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
  fs.writeFileSync(file, bytes.subarray(0, S + S / 2));
  const fd = fs.openSync(file, "r");
  try {
    const ahead = new ReadAhead(fd, new ChunkPool(holder, S, 4), 0, S, 2, true);
    const got: number[] = [];
    const seen: Uint8Array[] = [];
    const take = async (fill = true) => {
      const r = await ahead.next();
      if (r instanceof Error) throw r;
      got.push(r.got);
      seen.push(r.chunk.slice(0, r.got));
      if (fill) ahead.fill();
    };
    await take(); // [0, S): whole; reads at S and 2S are under way
    await take(false); // [S, 1.5 S): short, not the end: the read at 2S (which found nothing) is dropped
    fs.appendFileSync(file, bytes.subarray(S + S / 2));
    ahead.fill();
    await take(); // [1.5 S, 2.5 S): the bytes written meanwhile, right after the short read's
    await take(); // [2.5 S, 3 S)
    expect(got).toEqual([S, S / 2, S, S / 2]);
    const all = new Uint8Array(3 * S);
    let at = 0;
    for (const c of seen) all.set(c, (at += c.length) - c.length);
    expect(all).toEqual(bytes);
    await ahead.settle();
  } finally {
    fs.closeSync(fd);
  }
});
