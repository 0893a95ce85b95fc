/**
 * Helper of record-interop.sh: our example client (examples/client.ts) against qemu-nbd 10 with three
 * metadata contexts, in extended-header mode. One connection: EXTENDED_HEADERS, SET_META_CONTEXT
 * (base:allocation, qemu:allocation-depth, qemu:dirty-bitmap:b0), GO, WRITE 64 KiB (with
 * NBD_CMD_FLAG_PAYLOAD_LEN), BLOCK_STATUS over all contexts, BLOCK_STATUS in the payload form (PAYLOAD_LEN,
 * only the dirty bitmap's id), READ, DISC.
 *
 * usage: deno run -A scripts/capture/interop-client-ext.ts PORT
 * It prints `ours: ...` lines (what the client saw); the expected frame list is checked against qemu-nbd's
 * own trace, never against these lines.
 */
import process from "node:process";
import { NbdClient, pattern } from "../../examples/client.ts";

const port = Number(process.argv[2]);
const contexts = ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0"];
const c = await NbdClient.open({ port, name: "disk", metaContexts: contexts });
try {
  console.log(`ours: mode=${c.mode}`);
  for (const [id, name] of c.contexts) console.log(`ours: context id=${id} name=${name}`);
  const at = 1024 * 1024;
  await c.write(at, pattern(65536, 9));
  const all = await c.blockStatus(at - 65536, 196608);
  for (const [name, extents] of all) {
    console.log(`ours: map ${name} ${extents.map((e) => `${e.length}:${e.status}`).join(",")}`);
  }
  const dirtyId = [...c.contexts].find(([, n]) => n === "qemu:dirty-bitmap:b0")![0];
  const only = await c.blockStatus(at - 65536, 196608, { contextIds: [dirtyId] });
  for (const [name, extents] of only) {
    console.log(`ours: payload-form map ${name} ${extents.map((e) => `${e.length}:${e.status}`).join(",")}`);
  }
  const back = await c.read(at, 4096);
  console.log(`ours: read-back ok=${back.every((b, i) => b === pattern(4096, 9)[i])}`);
  console.log(`ours: findings=${c.findings.map((f) => f.rule).join(",")}`);
  await c.disconnect();
} finally {
  c.destroy();
}
