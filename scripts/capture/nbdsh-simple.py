# nbdsh script for simple-reply sessions (record-libnbd-nbdkit-simple.sh, record-nbd-server.sh,
# record-nbdkit-oldstyle.sh).  Every command is issued with the aio API so the script can print
# its cookie and the error the client saw; strict mode is off so errors come from the server.
#   NBD_OPTMODE=1: opt mode, LIST + INFO (NAME, DESCRIPTION) before GO
#   NBD_SR=0/1:    ask for structured replies or not
#   NBD_CMDS:      comma list of read,read2,write,zero,trim,flush,cache,readpastend,writepastend,fua
import errno
import os
import nbd

uri = os.environ["NBD_URI"]
optmode = os.environ.get("NBD_OPTMODE", "1") == "1"
cmds = os.environ.get("NBD_CMDS", "read,write,flush,readpastend").split(",")


def say(**kv):
    print("script: " + " ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def errname(e):
    return "NBD_" + (e.errno if isinstance(e.errno, str) else errno.errorcode[e.errno])


def run(typ, off, cnt, issue):
    ck = issue()
    say(event="issued", type=typ, offset=off, count=cnt, cookie=ck)
    try:
        while not h.aio_command_completed(ck):
            h.poll(-1)
    except nbd.Error as e:
        say(event="error", cookie=ck, errno=errname(e))


h.set_strict_mode(0)
h.set_request_structured_replies(os.environ.get("NBD_SR", "0") == "1")
if optmode:
    h.set_opt_mode(True)
    h.set_full_info(True)
h.connect_uri(uri)
if optmode:
    names = []
    try:
        h.opt_list(lambda n, d: names.append(n) or 0)
        say(event="list", count=len(names), exports=",".join(names))
    except nbd.Error as e:
        print(f"script-note: opt_list failed: {e}", flush=True)
    h.opt_info()
    try:
        say(event="info", kind="name", value=h.get_canonical_export_name())
    except nbd.Error:
        pass
    h.opt_go()
size = h.get_size()
for c in cmds:
    if c == "read":
        run(0, 0, 4096, lambda: h.aio_pread(nbd.Buffer(4096), 0))
    elif c == "read2":
        run(0, 8192, 512, lambda: h.aio_pread(nbd.Buffer(512), 8192))
    elif c == "write":
        run(1, 4096, 1024, lambda: h.aio_pwrite(b"\x5a" * 1024, 4096))
    elif c == "fua":
        run(1, 0, 512, lambda: h.aio_pwrite(b"\x5b" * 512, 0, flags=nbd.CMD_FLAG_FUA))
    elif c == "zero":
        run(6, 16384, 4096, lambda: h.aio_zero(4096, 16384))
    elif c == "trim":
        run(4, 20480, 4096, lambda: h.aio_trim(4096, 20480))
    elif c == "flush":
        run(3, 0, 0, lambda: h.aio_flush())
    elif c == "cache":
        run(5, 0, 4096, lambda: h.aio_cache(4096, 0))
    elif c == "readpastend":
        run(0, size, 512, lambda: h.aio_pread(nbd.Buffer(512), size))
    elif c == "writepastend":
        run(1, size, 512, lambda: h.aio_pwrite(b"\x11" * 512, size))
    else:
        raise SystemExit(f"unknown command {c}")
h.shutdown()
