# nbdsh script (run by record-libnbd-nbdkit-sr.sh / record-libnbd-qemu-sr.sh): one connection
# in opt mode: LIST, INFO with NAME/DESCRIPTION, LIST_META_CONTEXT, GO (+SET_META_CONTEXT),
# then a mix of commands including errors the server must report (strict mode off so the
# client does not catch them first).  Prints 'script: event=...' lines used by walk.py.
import errno
import os
import nbd

uri = os.environ["NBD_URI"]
sr = os.environ.get("NBD_SR", "1") == "1"
contexts = os.environ.get("NBD_CONTEXTS", "base:allocation").split(",")


def say(**kv):
    print("script: " + " ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def wait(cookie):
    while not h.aio_command_completed(cookie):
        h.poll(-1)


h.set_opt_mode(True)
h.set_full_info(True)
h.set_strict_mode(0)
h.set_request_structured_replies(sr)
for c in contexts:
    h.add_meta_context(c)
h.connect_uri(uri)
names = []
h.opt_list(lambda n, d: names.append(n) or 0)
say(event="list", count=len(names), exports=",".join(names))
h.opt_info()
say(event="info", kind="name", value=h.get_canonical_export_name())
try:
    say(event="info", kind="description", value=h.get_export_description())
except nbd.Error:
    pass
if sr:
    seen = []
    h.opt_list_meta_context(lambda n: seen.append(n) or 0)
    for n in seen:
        say(event="context", name=n)
h.opt_go()
size = h.get_size()
if sr:
    for c in contexts:
        say(event="negotiated", name=c, value=int(h.can_meta_context(c)))

h.pwrite(b"\xab" * 8192, 0)
buf = nbd.Buffer(4096)
ck = h.aio_pread(buf, 0)
say(event="issued", type=0, offset=0, count=4096, cookie=ck)
wait(ck)
h.pread(8192, 65536)            # never written: zeroes (a hole on qemu-nbd)
h.pread(8192, 4096)             # half data, half hole
if sr:
    h.block_status(131072, 0, lambda ctx, off, ents, err: 0)
h.zero(4096, 16384, nbd.CMD_FLAG_NO_HOLE)
h.trim(4096, 32768)
if h.can_cache():
    h.cache(4096, 0)
if h.can_fua():
    h.pwrite(b"\xcd" * 512, 40960, nbd.CMD_FLAG_FUA)
h.flush()
# errors: read past the end, write past the end
buf = nbd.Buffer(4096)
ck = h.aio_pread(buf, size)
say(event="issued", type=0, offset=size, count=4096, cookie=ck)
try:
    wait(ck)
except nbd.Error as e:
    say(event="error", cookie=ck, errno="NBD_" + (e.errno if isinstance(e.errno, str) else errno.errorcode[e.errno]))
ck = h.aio_pwrite(b"\x11" * 4096, size)
say(event="issued", type=1, offset=size, count=4096, cookie=ck)
try:
    wait(ck)
except nbd.Error as e:
    say(event="error", cookie=ck, errno="NBD_" + (e.errno if isinstance(e.errno, str) else errno.errorcode[e.errno]))
h.shutdown()
