#!/usr/bin/python3
# A python `nbd` (libnbd) client for `conform client`: reads the whole export with block status and
# pread, checks that every hole reported reads as zeroes, and writes the data to OUT.
#   python3 scripts/conform_client.py nbd://127.0.0.1:PORT/disk OUT
import sys
import nbd

uri, out = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
size = h.get_size()
holes = []
if h.can_meta_context("base:allocation"):
    def cb(metacontext, offset, entries, err):
        at = offset
        for i in range(0, len(entries), 2):
            if entries[i + 1] & 1:
                holes.append((at, entries[i]))
            at += entries[i]
        return 0
    pos = 0
    while pos < size:
        before = len(holes)
        h.block_status(min(size - pos, 1 << 20), pos, cb)
        pos += min(size - pos, 1 << 20)
data = bytearray()
try:
    for off in range(0, size, 256 * 1024):
        data += h.pread(min(256 * 1024, size - off), off)
except nbd.Error as e:
    h.shutdown()
    sys.exit("read failed: %s" % e)
for at, length in holes:
    end = min(at + length, size)
    if any(data[at:end]):
        sys.exit("a hole reported by block status does not read as zeroes at %d" % at)
with open(out, "wb") as f:
    f.write(data)
h.shutdown()
