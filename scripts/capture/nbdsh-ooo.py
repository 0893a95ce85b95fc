# nbdsh script for record-nbdkit-ooo.sh: several requests in flight at once on one connection
# against an nbdkit eval plugin whose pread sleeps longer for lower offsets, so the server
# answers them out of order.  Completion callbacks run in the order the replies arrive; the
# script prints that order (by cookie).
#   NBD_SR=0/1: structured replies or not.
import os
import nbd

uri = os.environ["NBD_URI"]
sr = os.environ.get("NBD_SR", "1") == "1"


def say(**kv):
    print("script: " + " ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


h.set_request_structured_replies(sr)
if sr:
    h.add_meta_context("base:allocation")
h.connect_uri(uri)
done = []
cookies = {}


def cb(i):
    def f(err):
        done.append(i)
        return 0
    return f


reqs = [(0, 0, 4096), (1, 4096, 4096), (2, 8192, 4096), (3, 12288, 4096), (4, 16384, 512)]
bufs = []
for i, off, cnt in reqs:
    b = nbd.Buffer(cnt)
    bufs.append(b)
    ck = h.aio_pread(b, off, completion=cb(i))
    cookies[i] = ck
    say(event="issued", type=0, offset=off, count=cnt, cookie=ck)
if sr:
    i = len(reqs)
    ck = h.aio_block_status(65536, 0, lambda *a: 0, completion=cb(i))
    cookies[i] = ck
    say(event="issued", type=7, offset=0, count=65536, cookie=ck)
while h.aio_in_flight() > 0:
    h.poll(-1)
say(event="completion-order", cookies=",".join(str(cookies[i]) for i in done))
h.shutdown()
