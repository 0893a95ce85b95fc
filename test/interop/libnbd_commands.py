"""libnbd (python3 `nbd` module, 1.14) drives every option and command against an NBD server.

Usage: python3 libnbd_commands.py PORT NAME [--no-sr] [--read-only]

Opt mode first (LIST, INFO with full info, LIST_META_CONTEXT, GO), then every command with its flags,
verifying data; errors are provoked with libnbd's strict mode off so that they reach the server.
Prints one JSON object on the last line; exits non-zero on the first failed check.
"""
import errno
import json
import sys

import nbd

port, name = int(sys.argv[1]), sys.argv[2]
sr = "--no-sr" not in sys.argv
ro = "--read-only" in sys.argv
out = {"checks": []}


def ok(what, **kw):
    out["checks"].append(what)
    print("ok:", what, kw if kw else "", file=sys.stderr)


def expect_errno(fn, want, what):
    try:
        fn()
    except nbd.Error as e:
        if e.errnum not in want:
            raise AssertionError("%s: errno %s (%s), wanted %s" % (what, e.errno, e.string, want))
        ok(what, errno=e.errno)
        return e.errno
    raise AssertionError("%s: succeeded" % what)


h = nbd.NBD()
h.set_opt_mode(True)
h.set_request_structured_replies(sr)
h.set_full_info(True)
h.add_meta_context("base:allocation")
h.connect_tcp("127.0.0.1", str(port))
out["structured"] = h.get_structured_replies_negotiated()
assert out["structured"] == sr, "structured replies negotiated: %s" % out["structured"]

# NBD_OPT_LIST
exports = []
h.opt_list(lambda n, d: exports.append([n, d]))
assert [n for n, _ in exports] == [name], exports
out["exports"] = exports
ok("opt_list")

# NBD_OPT_INFO with NAME, DESCRIPTION, BLOCK_SIZE
h.set_export_name(name)
h.opt_info()
out["info"] = {
    "size": h.get_size(),
    "canonical": h.get_canonical_export_name(),
    "description": h.get_export_description(),
    "block": [h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_PREFERRED), h.get_block_size(nbd.SIZE_MAXIMUM)],
    "read_only": h.is_read_only(),
}
assert out["info"]["canonical"] == name
assert out["info"]["read_only"] == ro
ok("opt_info", **out["info"])

# NBD_OPT_LIST_META_CONTEXT (refused without structured replies)
contexts = []
if sr:
    h.opt_list_meta_context(lambda c: contexts.append(c))
    assert contexts == ["base:allocation"], contexts
    ok("opt_list_meta_context", contexts=contexts)
else:
    try:
        h.opt_list_meta_context(lambda c: contexts.append(c))
        raise AssertionError("LIST_META_CONTEXT without structured replies succeeded")
    except nbd.Error as e:
        ok("opt_list_meta_context refused without structured replies", error=e.string)

# A wrong export name is refused and haggling goes on.
h.set_export_name("no-such-export")
try:
    h.opt_info()
    raise AssertionError("INFO for an unknown export succeeded")
except nbd.Error:
    ok("opt_info of an unknown export fails")
h.set_export_name(name)

# NBD_OPT_GO
h.opt_go()
size = h.get_size()
flags = {
    k: getattr(h, k)()
    for k in ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_df", "can_multi_conn", "can_cache"]
}
out["flags"] = flags
assert all(v for k, v in flags.items() if k != "can_df"), flags
assert flags["can_df"] == sr, flags
assert h.can_meta_context("base:allocation") == sr
ok("opt_go", size=size)

h.set_strict_mode(0)  # let bad requests reach the server
pat = bytes((i * 7 + 3) & 0xFF for i in range(65536))

if not ro:
    h.pwrite(pat, 0)
    assert h.pread(65536, 0) == pat
    ok("pwrite + pread")
    h.pwrite(pat[:4096], 1 << 20, nbd.CMD_FLAG_FUA)
    assert h.pread(4096, 1 << 20, nbd.CMD_FLAG_FUA) == pat[:4096]
    ok("pwrite FUA")
    h.zero(4096, 8192)
    assert h.pread(4096, 8192) == bytes(4096)
    ok("zero (may punch)")
    h.zero(4096, 16384, nbd.CMD_FLAG_NO_HOLE)
    assert h.pread(4096, 16384) == bytes(4096)
    ok("zero NO_HOLE")
    h.zero(4096, 20480, nbd.CMD_FLAG_FAST_ZERO)
    assert h.pread(4096, 20480) == bytes(4096)
    ok("zero FAST_ZERO")
    h.trim(65536, 2 << 20)
    ok("trim")
    h.trim(4096, 1 << 20, nbd.CMD_FLAG_FUA)
    ok("trim FUA")
    expect_errno(lambda: h.pwrite(b"x" * 512, size), [errno.ENOSPC, errno.EINVAL], "pwrite beyond the end")
else:
    expect_errno(lambda: h.pwrite(b"x" * 512, 0), [errno.EPERM], "pwrite on a read-only export")
    expect_errno(lambda: h.trim(4096, 0), [errno.EPERM], "trim on a read-only export")
    expect_errno(lambda: h.zero(4096, 0), [errno.EPERM], "zero on a read-only export")

h.flush()
ok("flush")
h.cache(65536, 0)
ok("cache")
expect_errno(lambda: h.pread(4096, size - 512), [errno.EINVAL], "pread beyond the end")
expect_errno(lambda: h.cache(4096, size), [errno.EINVAL], "cache beyond the end")
assert h.pread(512, 0) == (pat[:512] if not ro else bytes(512)), "connection still usable"

if sr:
    # READ as chunks: DF gives exactly one OFFSET_DATA chunk; without DF holes come as OFFSET_HOLE.
    chunks = []
    h.pread_structured(1 << 20, 0, lambda buf, off, st, err: chunks.append((off, len(buf), st)) or 0, nbd.CMD_FLAG_DF)
    assert len(chunks) == 1 and chunks[0][2] == nbd.READ_DATA, chunks
    chunks = []
    h.pread_structured(1 << 20, 0, lambda buf, off, st, err: chunks.append((off, len(buf), st)) or 0)
    kinds = sorted(set(c[2] for c in chunks))
    out["read_chunks"] = chunks
    assert sum(c[1] for c in chunks) == 1 << 20
    if not ro:
        assert kinds == [nbd.READ_DATA, nbd.READ_HOLE], chunks
    ok("pread_structured (DF and chunks)", chunks=len(chunks))

    extents = []
    h.block_status(size, 0, lambda ctx, off, ents, err: extents.append((ctx, off, list(ents))) or 0)
    assert extents and extents[0][0] == "base:allocation"
    ents = extents[0][2]
    assert sum(ents[0::2]) == size, extents
    out["extents"] = ents
    one = []
    h.block_status(size, 0, lambda ctx, off, ents, err: one.append(list(ents)) or 0, nbd.CMD_FLAG_REQ_ONE)
    assert len(one) == 1 and len(one[0]) == 2, one
    ok("block_status (+REQ_ONE)", extents=len(ents) // 2)
    expect_errno(
        lambda: h.block_status(4096, size, lambda *a: 0), [errno.EINVAL], "block_status beyond the end"
    )
else:
    expect_errno(lambda: h.block_status(4096, 0, lambda *a: 0), [errno.EINVAL, errno.ENOTSUP], "block_status without contexts")

h.shutdown()
ok("shutdown (NBD_CMD_DISC)")

# NBD_OPT_ABORT in a second connection.
h2 = nbd.NBD()
h2.set_opt_mode(True)
h2.connect_tcp("127.0.0.1", str(port))
h2.opt_abort()
ok("opt_abort")
print(json.dumps(out))
