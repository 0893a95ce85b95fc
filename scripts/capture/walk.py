#!/usr/bin/python3
"""Walk the two byte streams of one captured NBD conversation with the spec's fixed
layouts (shared/spec/nbd-protocol.md §3, §7, §8), check every frame against the peers'
own logs (NAME.peer.log) and against tshark's heuristic NBD dissector, and write
NAME.expected.jsonl.

usage: walk.py NAME DIR

This is deliberately independent of the TypeScript codec: nothing here imports it.
Any disagreement between the walk, the peer logs and tshark is fatal (exit 1).
"""
import json
import os
import re
import struct
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in scripts/capture/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import streams  # noqa: E402

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
CLISERV = 0x0000420281861253
REP_MAGIC = 0x0003E889045565A9
REQ_MAGIC = 0x25609513
EXT_REQ_MAGIC = 0x21E41C71
SIMPLE_MAGIC = 0x67446698
SR_MAGIC = 0x668E33EF
EXT_REPLY_MAGIC = 0x6E8A278C

OPT = {1: "NBD_OPT_EXPORT_NAME", 2: "NBD_OPT_ABORT", 3: "NBD_OPT_LIST", 5: "NBD_OPT_STARTTLS", 6: "NBD_OPT_INFO",
       7: "NBD_OPT_GO", 8: "NBD_OPT_STRUCTURED_REPLY", 9: "NBD_OPT_LIST_META_CONTEXT",
       10: "NBD_OPT_SET_META_CONTEXT", 11: "NBD_OPT_EXTENDED_HEADERS"}
REP = {1: "NBD_REP_ACK", 2: "NBD_REP_SERVER", 3: "NBD_REP_INFO", 4: "NBD_REP_META_CONTEXT",
       0x80000001: "NBD_REP_ERR_UNSUP", 0x80000002: "NBD_REP_ERR_POLICY", 0x80000003: "NBD_REP_ERR_INVALID",
       0x80000004: "NBD_REP_ERR_PLATFORM", 0x80000005: "NBD_REP_ERR_TLS_REQD", 0x80000006: "NBD_REP_ERR_UNKNOWN",
       0x80000007: "NBD_REP_ERR_SHUTDOWN", 0x80000008: "NBD_REP_ERR_BLOCK_SIZE_REQD",
       0x80000009: "NBD_REP_ERR_TOO_BIG", 0x8000000A: "NBD_REP_ERR_EXT_HEADER_REQD"}
INFO = {0: "NBD_INFO_EXPORT", 1: "NBD_INFO_NAME", 2: "NBD_INFO_DESCRIPTION", 3: "NBD_INFO_BLOCK_SIZE"}
CMD = {0: "NBD_CMD_READ", 1: "NBD_CMD_WRITE", 2: "NBD_CMD_DISC", 3: "NBD_CMD_FLUSH", 4: "NBD_CMD_TRIM",
       5: "NBD_CMD_CACHE", 6: "NBD_CMD_WRITE_ZEROES", 7: "NBD_CMD_BLOCK_STATUS"}
CMD_FLAGS = {0x1: "NBD_CMD_FLAG_FUA", 0x2: "NBD_CMD_FLAG_NO_HOLE", 0x4: "NBD_CMD_FLAG_DF",
             0x8: "NBD_CMD_FLAG_REQ_ONE", 0x10: "NBD_CMD_FLAG_FAST_ZERO", 0x20: "NBD_CMD_FLAG_PAYLOAD_LEN"}
REPLY_FLAGS = {0x1: "NBD_REPLY_FLAG_DONE"}
HS_FLAGS = {0x1: "NBD_FLAG_FIXED_NEWSTYLE", 0x2: "NBD_FLAG_NO_ZEROES"}
CL_FLAGS = {0x1: "NBD_FLAG_C_FIXED_NEWSTYLE", 0x2: "NBD_FLAG_C_NO_ZEROES"}
TX_FLAGS = {0x1: "NBD_FLAG_HAS_FLAGS", 0x2: "NBD_FLAG_READ_ONLY", 0x4: "NBD_FLAG_SEND_FLUSH",
            0x8: "NBD_FLAG_SEND_FUA", 0x10: "NBD_FLAG_ROTATIONAL", 0x20: "NBD_FLAG_SEND_TRIM",
            0x40: "NBD_FLAG_SEND_WRITE_ZEROES", 0x80: "NBD_FLAG_SEND_DF", 0x100: "NBD_FLAG_CAN_MULTI_CONN",
            0x200: "NBD_FLAG_SEND_RESIZE", 0x400: "NBD_FLAG_SEND_CACHE", 0x800: "NBD_FLAG_SEND_FAST_ZERO",
            0x1000: "NBD_FLAG_BLOCK_STATUS_PAYLOAD"}
CHUNK = {0: "NBD_REPLY_TYPE_NONE", 1: "NBD_REPLY_TYPE_OFFSET_DATA", 2: "NBD_REPLY_TYPE_OFFSET_HOLE",
         5: "NBD_REPLY_TYPE_BLOCK_STATUS", 6: "NBD_REPLY_TYPE_BLOCK_STATUS_EXT",
         0x8001: "NBD_REPLY_TYPE_ERROR", 0x8002: "NBD_REPLY_TYPE_ERROR_OFFSET"}
ERRNO = {1: "NBD_EPERM", 5: "NBD_EIO", 12: "NBD_ENOMEM", 22: "NBD_EINVAL", 28: "NBD_ENOSPC",
         75: "NBD_EOVERFLOW", 95: "NBD_ENOTSUP", 108: "NBD_ESHUTDOWN"}


class WalkError(Exception):
    pass


def flag_names(value, table):
    names = [n for bit, n in sorted(table.items()) if value & bit]
    rest = value & ~sum(table)
    if rest:
        raise WalkError(f"unknown flag bits 0x{rest:x}")
    return names


def name(table, v, what):
    if v not in table:
        raise WalkError(f"unknown {what} {v:#x}")
    return table[v]


class Stream:
    def __init__(self, data, direction):
        self.data, self.pos, self.dir = data, 0, direction

    def left(self):
        return len(self.data) - self.pos

    def need(self, n, what):
        if self.left() < n:
            raise WalkError(f"{self.dir} ends inside {what} at {self.pos} (need {n}, have {self.left()})")

    def peek(self, fmt, off=0):
        return struct.unpack_from(fmt, self.data, self.pos + off)


def walk(c2s, s2c, stop_after_starttls=False):
    """Return (frames, notes). Frames carry public fields plus '_'-prefixed internals."""
    c, s = Stream(c2s, "c2s"), Stream(s2c, "s2c")
    frames = []
    notes = []

    def add(st, flen, kind, **fields):
        st.need(flen, kind)
        f = {"connection": 0, "direction": st.dir, "frameOffset": st.pos, "frameLength": flen, "kind": kind}
        f.update(fields)
        frames.append(f)
        st.pos += flen
        return f

    # ---- greeting ----
    s.need(16, "greeting")
    if s.data[:8] != NBDMAGIC:
        raise WalkError("no NBDMAGIC")
    (m2,) = s.peek(">Q", 8)
    sr = ext = False
    if m2 == CLISERV:
        s.need(152, "oldstyle greeting")
        size, hflags16, tflags = s.peek(">QHH", 16)
        if hflags16 != 0:
            raise WalkError("oldstyle handshake flags nonzero")
        if any(s.data[28:152]):
            raise WalkError("oldstyle reserved bytes nonzero")
        add(s, 152, "oldstyle-greeting", size=str(size), handshakeFlags=[], transmissionFlags=flag_names(tflags, TX_FLAGS),
            _size=size, _tflags=tflags)
    elif m2 == IHAVEOPT:
        s.need(18, "newstyle greeting")
        (hflags,) = s.peek(">H", 16)
        add(s, 18, "newstyle-greeting", handshakeFlags=flag_names(hflags, HS_FLAGS), _hflags=hflags)
        c.need(4, "client flags")
        (cflags,) = c.peek(">I")
        add(c, 4, "client-flags", clientFlags=flag_names(cflags, CL_FLAGS), _cflags=cflags)
        transmission = False
        while not transmission:
            if c.left() == 0:
                notes.append("client closed during option haggling")
                break
            c.need(16, "option header")
            magic, opt, olen = c.peek(">QII")
            if magic != IHAVEOPT:
                raise WalkError(f"bad option magic at c2s {c.pos}")
            data = c.data[c.pos + 16:c.pos + 16 + olen]
            of = add(c, 16 + olen, "option-request", option=name(OPT, opt, "option"), _opt=opt, _len=olen,
                     _data=data)
            if opt == 1:  # EXPORT_NAME: no option reply
                if s.left() == 0:
                    notes.append("server closed instead of answering EXPORT_NAME")
                    break
                n = 10 if (hflags & 2 and cflags & 2) else 134
                size, tflags = s.peek(">QH")
                if n == 134 and any(s.data[s.pos + 10:s.pos + 134]):
                    raise WalkError("EXPORT_NAME reply padding nonzero")
                add(s, n, "export-name-reply", size=str(size), transmissionFlags=flag_names(tflags, TX_FLAGS),
                    _size=size, _tflags=tflags)
                transmission = True
                break
            while True:
                if s.left() == 0:
                    notes.append(f"server closed without a final reply to {OPT.get(opt)}")
                    of["_noreply"] = True
                    break
                s.need(20, "option reply header")
                rmagic, ropt, rtype, rlen = s.peek(">QIII")
                if rmagic != REP_MAGIC:
                    raise WalkError(f"bad option reply magic at s2c {s.pos}")
                if ropt != opt:
                    raise WalkError(f"option reply at s2c {s.pos} echoes {ropt}, pending {opt}")
                rdata = s.data[s.pos + 20:s.pos + 20 + rlen]
                fields = {"option": name(OPT, ropt, "option"), "reply": name(REP, rtype, "reply type")}
                extra = {"_opt": ropt, "_type": rtype, "_len": rlen, "_data": rdata}
                if rtype == 3:
                    if rlen < 2:
                        raise WalkError("short NBD_REP_INFO")
                    (itype,) = struct.unpack_from(">H", rdata)
                    fields["info"] = name(INFO, itype, "info type")
                    extra["_info"] = itype
                    want = {0: 12, 3: 14}.get(itype)
                    if want is not None and rlen != want:
                        raise WalkError(f"{INFO[itype]} length {rlen} != {want}")
                    if itype == 0:
                        extra["_size"], extra["_tflags"] = struct.unpack_from(">QH", rdata, 2)
                        flag_names(extra["_tflags"], TX_FLAGS)
                elif rtype == 4:
                    extra["_ctxid"] = struct.unpack_from(">I", rdata)[0]
                    extra["_ctxname"] = rdata[4:].decode()
                    fields["contextId"] = extra["_ctxid"]
                    fields["context"] = extra["_ctxname"]
                elif rtype == 2:
                    (nlen,) = struct.unpack_from(">I", rdata)
                    if nlen > rlen - 4:
                        raise WalkError("NBD_REP_SERVER name length too big")
                    extra["_export"] = rdata[4:4 + nlen].decode()
                elif rtype == 1 and rlen != 0:
                    raise WalkError("ACK with data")
                add(s, 20 + rlen, "option-reply", **fields, **extra)
                if rtype in (2, 3, 4):
                    continue
                break
            final = frames[-1]
            if final["kind"] != "option-reply" or final["_opt"] != opt:
                break
            if final["_type"] == 1:
                if opt == 8:
                    sr = True
                elif opt == 11:
                    ext = True
                elif opt == 7:
                    transmission = True
                elif opt == 5:
                    notes.append("STARTTLS acknowledged: the rest of both streams is TLS")
                    if not stop_after_starttls:
                        raise WalkError("STARTTLS ACK in a capture not marked as TLS")
                    return frames, notes, {"tls": True}
                elif opt == 2:
                    break
            if opt == 2:
                break
        if not transmission:
            if c.left() or s.left():
                raise WalkError(f"bytes left after handshake: c2s {c.left()} s2c {s.left()}")
            return frames, notes, {"sr": sr, "ext": ext}
    else:
        raise WalkError("unknown second magic")

    # ---- transmission: requests ----
    requests = []
    while c.left():
        c.need(4, "request magic")
        (magic,) = c.peek(">I")
        if magic == EXT_REQ_MAGIC:
            if not ext:
                raise WalkError("extended request without extended headers")
            c.need(32, "extended request")
            _, fl, typ, cookie, off, ln = c.peek(">IHHQQQ")
            payload = 0
            if typ == 1 or fl & 0x20:  # WRITE always carries its payload (qemu omits PAYLOAD_LEN, quirk 1)
                payload = ln
            f = add(c, 32 + payload, "request", command=name(CMD, typ, "command"), flags=flag_names(fl, CMD_FLAGS),
                    cookie=str(cookie), extendedHeader=True, offset=str(off), length=str(ln),
                    _type=typ, _flags=fl, _cookie=cookie, _off=off, _len=ln)
        elif magic == REQ_MAGIC:
            if ext:
                raise WalkError("compact request after extended headers")
            c.need(28, "request")
            _, fl, typ, cookie, off, ln = c.peek(">IHHQQI")
            payload = ln if typ == 1 else 0
            f = add(c, 28 + payload, "request", command=name(CMD, typ, "command"), flags=flag_names(fl, CMD_FLAGS),
                    cookie=str(cookie), extendedHeader=False, offset=str(off), length=str(ln),
                    _type=typ, _flags=fl, _cookie=cookie, _off=off, _len=ln)
        else:
            raise WalkError(f"bad request magic {magic:#x} at c2s {c.pos}")
        requests.append(f)
        if typ == 2 and c.left():
            raise WalkError("client sent bytes after NBD_CMD_DISC")

    # ---- transmission: replies ----
    done = [False] * len(requests)

    def pending(cookie):
        for i, r in enumerate(requests):
            if not done[i] and r["_cookie"] == cookie and r["_type"] != 2:
                return i
        raise WalkError(f"reply for cookie {cookie} with no request in flight")

    while s.left():
        s.need(4, "reply magic")
        (magic,) = s.peek(">I")
        if magic == SIMPLE_MAGIC:
            s.need(16, "simple reply")
            _, err, cookie = s.peek(">IIQ")
            i = pending(cookie)
            r = requests[i]
            if ext:
                raise WalkError("simple reply in extended mode")
            n = 16 + (r["_len"] if (r["_type"] == 0 and err == 0) else 0)
            fields = {"cookie": str(cookie), "requestCommand": r["command"]}
            if err:
                fields["error"] = name(ERRNO, err, "error")
            add(s, n, "simple-reply", **fields, _cookie=cookie, _err=err, _req=i)
            done[i] = True
        elif magic in (SR_MAGIC, EXT_REPLY_MAGIC):
            is_ext = magic == EXT_REPLY_MAGIC
            if is_ext != ext:
                raise WalkError("reply chunk header style does not match the negotiated mode")
            if not (sr or ext):
                raise WalkError("structured reply without negotiation")
            if is_ext:
                s.need(32, "extended chunk header")
                _, fl, typ, cookie, hoff, ln = s.peek(">IHHQQQ")
                hl = 32
            else:
                s.need(20, "chunk header")
                _, fl, typ, cookie, ln = s.peek(">IHHQI")
                hoff, hl = None, 20
            i = pending(cookie)
            r = requests[i]
            if is_ext and hoff != r["_off"]:
                raise WalkError("extended chunk offset != request offset")
            payload = s.data[s.pos + hl:s.pos + hl + ln]
            fields = {"flags": flag_names(fl, REPLY_FLAGS), "chunkType": name(CHUNK, typ, "chunk type"),
                      "cookie": str(cookie), "extendedHeader": is_ext, "requestCommand": r["command"]}
            extra = {"_flags": fl, "_type": typ, "_cookie": cookie, "_len": ln, "_req": i}
            # spec §9 length rules
            if typ == 0 and (ln != 0 or not fl & 1):
                raise WalkError("NONE chunk must be empty and final")
            if typ == 1:
                if ln < 9:
                    raise WalkError("OFFSET_DATA too short")
                extra["_doff"] = struct.unpack_from(">Q", payload)[0]
            if typ == 2:
                if ln != 12:
                    raise WalkError("OFFSET_HOLE length")
                extra["_doff"], extra["_hole"] = struct.unpack_from(">QI", payload)
            if typ == 5 and (ln < 12 or (ln - 4) % 8):
                raise WalkError("BLOCK_STATUS length")
            if typ == 6:
                ctx, cnt = struct.unpack_from(">II", payload)
                if ln != 8 + 16 * cnt or cnt == 0:
                    raise WalkError("BLOCK_STATUS_EXT count/length")
            if typ in (5, 6):
                extra["_ctxid"] = struct.unpack_from(">I", payload)[0]
                if (typ == 6) != ext:
                    raise WalkError("block status chunk type does not match mode")
            if typ & 0x8000:
                err, mlen = struct.unpack_from(">IH", payload)
                if mlen > ln - 6:
                    raise WalkError("error message longer than chunk")
                fields["error"] = name(ERRNO, err, "error")
                extra["_err"] = err
                extra["_msg"] = payload[6:6 + mlen].decode()
            add(s, hl + ln, "reply-chunk", **fields, **extra)
            if fl & 1:
                done[i] = True
        else:
            raise WalkError(f"bad reply magic {magic:#x} at s2c {s.pos}")
    for i, r in enumerate(requests):
        if r["_type"] != 2 and not done[i]:
            notes.append(f"request cookie {r['cookie']} ({r['command']}) got no (final) reply")
    return frames, notes, {"sr": sr, "ext": ext}


def order(frames, rows):
    """Conversation order: the capture packet holding each frame's first byte, then stream offset."""
    starts = {"c2s": [], "s2c": []}
    for r in rows:
        if r["len"]:
            starts[r["dir"]].append((r["seq"] - 1, r["seq"] - 1 + r["len"], r["frame"]))
    for f in frames:
        pkt = None
        for a, b, num in starts[f["direction"]]:
            if a <= f["frameOffset"] < b:
                pkt = num
                break
        if pkt is None:
            raise WalkError(f"no packet holds {f['direction']} byte {f['frameOffset']}")
        f["_packet"] = pkt
    return sorted(frames, key=lambda f: (f["_packet"], f["direction"], f["frameOffset"]))


# ---------------------------------------------------------------- peer-log agreement
class Checker:
    def __init__(self, frames):
        self.frames = frames
        self.count = 0

    def fr(self, kind, direction=None):
        return [f for f in self.frames if f["kind"] == kind and (direction is None or f["direction"] == direction)]

    def seq(self, label, claims, actual, mode="exact", optional=False):
        """claims/actual: lists of tuples. exact: equal lists; subseq: claims in order within actual;
        multiset: same elements, any order."""
        if mode == "exact":
            ok = claims == actual
        elif mode == "multiset":
            ok = sorted(map(repr, claims)) == sorted(map(repr, actual))
        elif mode == "submultiset":
            pool = list(map(repr, actual))
            ok = True
            for c in map(repr, claims):
                if c in pool:
                    pool.remove(c)
                else:
                    ok = False
        else:
            it = iter(actual)
            ok = all(any(c == a for a in it) for c in claims)
        if optional and not claims and not actual:
            print(f"  (none on either side: {label})", file=sys.stderr)
            return
        if not ok:
            print(f"DISAGREEMENT ({label}, {mode}):\n  log : {claims}\n  wire: {actual}", file=sys.stderr)
            raise SystemExit(1)
        if not claims:
            print(f"DISAGREEMENT ({label}): log gave no claims", file=sys.stderr)
            raise SystemExit(1)
        self.count += len(claims)
        print(f"  agree: {label}: {len(claims)} ({mode})", file=sys.stderr)


def lines_with(log, prefix):
    return [ln[len(prefix):].strip() for ln in log if ln.startswith(prefix)]


def check_qemu_client(ck, log, prefix):
    L = lines_with(log, prefix)
    g = [int(m.group(1), 16) for ln in L for m in [re.search(r"Global flags are (0x[0-9a-f]+)", ln)] if m]
    ck.seq(f"{prefix} greeting flags", g, [f["_hflags"] for f in ck.fr("newstyle-greeting")])
    o = [(int(a), int(b)) for ln in L for m in [re.search(r"Sending option request (\d+) .*len (\d+)", ln)] if m
         for a, b in [m.groups()]]
    ck.seq(f"{prefix} option requests", o, [(f["_opt"], f["_len"]) for f in ck.fr("option-request")])
    r = [tuple(map(int, m.groups())) for ln in L
         for m in [re.search(r"Received option reply (\d+) .*type (\d+) .*len (\d+)", ln)] if m]
    ck.seq(f"{prefix} option replies", r, [(f["_opt"], f["_type"], f["_len"]) for f in ck.fr("option-reply")])
    mc = [(m.group(1), int(m.group(2))) for ln in L
          for m in [re.search(r"meta context mapping of (\S+) to id (\d+)", ln)] if m]
    ck.seq(f"{prefix} meta context ids", mc,
           [(f["_ctxname"], f["_ctxid"]) for f in ck.fr("option-reply") if f["_type"] == 4], optional=True)
    sz = [(int(a), int(b, 16)) for ln in L for m in [re.search(r"Size is (\d+), export flags (0x[0-9a-f]+)", ln)] if m
          for a, b in [m.groups()]]
    ck.seq(f"{prefix} export size/flags", sz,
           [(f["_size"], f["_tflags"]) for f in ck.frames if "_tflags" in f and f["kind"] != "oldstyle-greeting"], optional=True)
    q = [tuple(int(x, 0) for x in m.groups()) for ln in L for m in [re.search(
        r"Sending request to server: \{ \.from = (\d+), \.len = (\d+), \.cookie = (\d+), \.flags = (0x[0-9a-f]+), "
        r"\.type = (\d+)", ln)] if m]
    ck.seq(f"{prefix} requests", q,
           [(f["_off"], f["_len"], f["_cookie"], f["_flags"], f["_type"]) for f in ck.fr("request")], optional=True)
    ch = [tuple(int(x, 0) for x in m.groups()) for ln in L for m in [re.search(
        r"Got reply chunk header: \{ flags = (0x[0-9a-f]+), type = (\d+) .*cookie = (\d+), length = (\d+)", ln)] if m]
    sm = [(int(m.group(1)), int(m.group(2))) for ln in L for m in [re.search(
        r"Got simple reply: \{ \.error = (\d+) .*cookie = (\d+)", ln)] if m]
    ck.seq(f"{prefix} simple replies (error, cookie)", sm,
           [(f["_err"], f["_cookie"]) for f in ck.fr("simple-reply")], optional=True)
    ck.seq(f"{prefix} reply chunks", ch,
           [(f["_flags"], f["_type"], f["_cookie"], f["_len"]) for f in ck.fr("reply-chunk")], optional=True)


def check_qemu_server(ck, log, prefix):
    L = lines_with(log, prefix)
    cf = [int(m.group(1), 16) for ln in L for m in [re.search(r"Received client flags (0x[0-9a-f]+)", ln)] if m]
    ck.seq(f"{prefix} client flags", cf, [f["_cflags"] for f in ck.fr("client-flags")])
    o = [int(m.group(1)) for ln in L for m in [re.search(r"Checking option (\d+)", ln)] if m]
    ck.seq(f"{prefix} options", o, [f["_opt"] for f in ck.fr("option-request")])
    # meta-context replies are traced separately (not via send_rep_len), so a subsequence
    r = [tuple(int(x) for x in m.groups()) for ln in L
         for m in [re.search(r"Reply opt=(\d+) .*type=(\d+) .*len=(\d+)", ln)] if m]
    ck.seq(f"{prefix} option replies", r, [(f["_opt"], f["_type"], f["_len"]) for f in ck.fr("option-reply")],
           "subseq")
    got = []
    cookie = None
    pend = None
    for ln in L:
        m = re.search(r"Got request: \{ magic = (0x[0-9a-f]+), \.flags = (0x[0-9a-f]+), \.type = (0x[0-9a-f]+), "
                      r"from = (\d+), len = (\d+)", ln)
        if m:
            pend = tuple(int(x, 0) for x in m.groups())
            continue
        m = re.search(r"Decoding type: cookie = (\d+)", ln)
        if m and pend:
            got.append(pend + (int(m.group(1)),))
            pend = None
    ck.seq(f"{prefix} requests", got, [
        (EXT_REQ_MAGIC if f["extendedHeader"] else REQ_MAGIC, f["_flags"], f["_type"], f["_off"], f["_len"],
         f["_cookie"]) for f in ck.fr("request")], optional=True)
    hole = [tuple(int(x) for x in m.groups()) for ln in L
            for m in [re.search(r"read hole reply: cookie = (\d+), offset = (\d+), len = (\d+)", ln)] if m]
    if hole:
        ck.seq(f"{prefix} hole chunks", hole,
               [(f["_cookie"], f["_doff"], f["_hole"]) for f in ck.fr("reply-chunk") if f["_type"] == 2], optional=True)
    # quirk 1 (README): qemu-nbd itself notes the extended WRITE without NBD_CMD_FLAG_PAYLOAD_LEN
    nc = [(int(m.group(1), 16), int(m.group(2), 16)) for ln in L
          for m in [re.search(r"non-compliant write without payload flag: from=(0x[0-9a-f]+), len=(0x[0-9a-f]+)", ln)] if m]
    ck.seq(f"{prefix} extended WRITEs without PAYLOAD_LEN", nc,
           [(f["_off"], f["_len"]) for f in ck.fr("request")
            if f["extendedHeader"] and f["_type"] == 1 and not f["_flags"] & 0x20], optional=True)


def check_nbdkit(ck, log, prefix="nbdkit:"):
    L = [ln for ln in log if ln.startswith(prefix)]
    g = [int(m.group(1), 16) for ln in L for m in [re.search(r"newstyle negotiation: flags: global (0x[0-9a-f]+)", ln)]
         if m]
    if g:
        ck.seq("nbdkit global flags", g, [f["_hflags"] for f in ck.fr("newstyle-greeting")])
    cf = [int(m.group(1), 16) for ln in L for m in [re.search(r"client flags: (0x[0-9a-f]+)", ln)] if m]
    if cf:
        ck.seq("nbdkit client flags", cf, [f["_cflags"] for f in ck.fr("client-flags")])
    # options nbdkit logs as received ("newstyle negotiation: NBD_OPT_X: client requested ...")
    req = [m.group(1) for ln in L for m in [re.search(r"newstyle negotiation: (NBD_OPT_\w+): client requested", ln)]
           if m]
    if req:
        ck.seq("nbdkit options received", req, [f["option"] for f in ck.fr("option-request")], "subseq")
    # final replies nbdkit says it sent: "replying to NBD_OPT_X with NBD_REP_Y"
    fin = [(m.group(1), m.group(2)) for ln in L for m in [re.search(r"replying to (NBD_OPT_\w+) with (NBD_REP_\w+)", ln)]
           if m]
    if fin:
        ck.seq("nbdkit final option replies", fin,
               [(f["option"], f["reply"]) for f in ck.fr("option-reply") if f["_type"] not in (2, 3, 4)], "subseq")
    ctx = [(m.group(1), int(m.group(2))) for ln in L
           for m in [re.search(r"NBD_OPT_SET_META_CONTEXT: replying with (\S+) id (\d+)", ln)] if m]
    if ctx:
        ck.seq("nbdkit SET_META_CONTEXT ids", ctx,
               [(f["_ctxname"], f["_ctxid"]) for f in ck.fr("option-reply")
                if f["_type"] == 4 and f["_opt"] == 10])
    ef = [int(m.group(1), 16) for ln in L for m in [re.search(r"flags: export (0x[0-9a-f]+)", ln)] if m]
    if ef:
        ck.seq("nbdkit export flags", ef, [f["_tflags"] for f in ck.frames if "_tflags" in f], "subseq")


LOGF = {"Read": 0, "Write": 1, "Flush": 3, "Trim": 4, "Cache": 5, "Zero": 6, "Extents": 7}


def check_nbdkit_logfilter(ck, log, ordered=True):
    """nbdkit log filter: 'connection=1 Read id=1 offset=0x0 count=0x200 ...' (one line per request it handled)."""
    L = lines_with(log, "nbdkit-log:")
    reqs = []
    for ln in L:
        m = re.search(r"connection=\d+ (Read|Write|Flush|Trim|Cache|Zero|Extents) id=\d+(?: offset=(0x[0-9a-f]+) "
                      r"count=(0x[0-9a-f]+))?", ln)
        if m:
            reqs.append((LOGF[m.group(1)], int(m.group(2) or "0", 16), int(m.group(3) or "0", 16)))
    ck.seq("nbdkit log filter requests", reqs,
           [(f["_type"], f["_off"], f["_len"]) for f in ck.fr("request") if f["_type"] != 2],
           # requests nbdkit's server core rejects (out of range) never reach the filter
           "subseq" if ordered else "submultiset")
    if not ordered:
        # the server's own completion order ('...Read id=N return=...') must be the order of the
        # final replies on the wire
        ids = {}
        for ln in L:
            m = re.search(r"connection=\d+ (Read|Write|Flush|Trim|Cache|Zero|Extents) id=(\d+)(?: offset=(0x[0-9a-f]+))?", ln)
            if m:
                ids[m.group(2)] = (LOGF[m.group(1)], int(m.group(3) or "0", 16))
        comp = [ids[m.group(1)] for ln in L for m in [re.search(r"connection=\d+ \.\.\.\w+ id=(\d+) ", ln)] if m]
        fin = sorted([f for f in ck.fr("simple-reply")] + [f for f in ck.fr("reply-chunk") if f["_flags"] & 1],
                     key=lambda f: f["frameOffset"])
        reqs_ = ck.fr("request")
        seen = set(ids.values())  # requests the server core answers itself never reach the filter
        ck.seq("nbdkit log filter completion order vs final replies", comp,
               [x for x in [(reqs_[f["_req"]]["_type"], reqs_[f["_req"]]["_off"]) for f in fin] if x in seen])
    return reqs


def check_libnbd(ck, log, prefix="libnbd:"):
    L = [ln for ln in log if ln.startswith(prefix)]
    sr = any("negotiated structured replies on this connection" in ln for ln in L)
    if sr:
        ck.seq("libnbd structured replies", [("NBD_OPT_STRUCTURED_REPLY", "NBD_REP_ACK")],
               [(f["option"], f["reply"]) for f in ck.fr("option-reply") if f["_opt"] == 8])
    ctx = [(m.group(1), int(m.group(2))) for ln in L
           for m in [re.search(r"negotiated (\S+) with context ID (\d+)", ln)] if m]
    if ctx:
        # logged for SET (real ids) and LIST (id 0) replies alike
        ck.seq("libnbd meta context ids", ctx,
               [(f["_ctxname"], f["_ctxid"]) for f in ck.fr("option-reply") if f["_type"] == 4])
    ex = [(int(m.group(1)), int(m.group(2), 16)) for ln in L
          for m in [re.search(r"exportsize: (\d+) eflags: (0x[0-9a-f]+)", ln)] if m]
    if ex:
        ck.seq("libnbd export size/flags", ex,
               [(f["_size"], f["_tflags"]) for f in ck.frames if "_tflags" in f], "subseq")
    # libnbd API calls that issue exactly one request each, in the order the client issued them
    api = {"nbd_pread": 0, "nbd_pwrite": 1, "nbd_flush": 3, "nbd_trim": 4, "nbd_cache": 5, "nbd_zero": 6,
           "nbd_block_status": 7, "nbd_aio_pread": 0, "nbd_aio_pwrite": 1, "nbd_aio_flush": 3,
           "nbd_aio_trim": 4, "nbd_aio_zero": 6, "nbd_aio_block_status": 7, "nbd_aio_cache": 5}
    calls = []
    for ln in L:
        m = re.search(r": (nbd_\w+): enter: (.*)$", ln)
        if m and m.group(1) in api:
            args = m.group(2)
            cnt = re.search(r"count=(\d+)", args)
            off = re.search(r"offset=(\d+)", args)
            fl = re.search(r"flags=(0x[0-9a-f]+)", args)
            calls.append([api[m.group(1)], int(off.group(1)) if off else 0, int(cnt.group(1)) if cnt else 0,
                          int(fl.group(1), 16) if fl else 0, m.group(1)])
            continue
        m = re.search(r": (nbd_\w+): leave: ret=(\d+)", ln)
        if m and m.group(1).startswith("nbd_aio_") and m.group(1) in api and calls:
            calls[-1].append(int(m.group(2)))  # the aio call's cookie
    if calls:
        ck.seq("libnbd API calls -> requests (type, offset, count, flags)",
               [tuple(c[:4]) for c in calls],
               [(f["_type"], f["_off"], f["_len"], f["_flags"]) for f in ck.fr("request") if f["_type"] != 2])
        ck_cookies = [(c[0], c[1], c[5]) for c in calls if len(c) > 5]
        if ck_cookies:
            reqs = {(f["_type"], f["_off"], f["_cookie"]) for f in ck.fr("request")}
            ck.seq("libnbd aio cookies", ck_cookies, [x for x in ck_cookies if x in reqs])
    if any(re.search(r"nbd_shutdown: leave: ret=0", ln) for ln in L):
        ck.seq("libnbd shutdown -> NBD_CMD_DISC", ["NBD_CMD_DISC"],
               [f["command"] for f in ck.fr("request") if f["_type"] == 2])
    if any(re.search(r"nbd_opt_abort: leave: ret=0", ln) for ln in L):
        ck.seq("libnbd opt_abort -> NBD_OPT_ABORT", ["NBD_OPT_ABORT"],
               [f["option"] for f in ck.fr("option-request") if f["_opt"] == 2])


def check_libnbd_tls(ck, log):
    """libnbd says the connection is using TLS; on the wire the plaintext part must end with the
    STARTTLS ACK (nothing after it can be read)."""
    L = [ln for ln in log if ln.startswith("libnbd-tls:") and "connection is using TLS" in ln]
    last = ck.frames[-1]
    ck.seq("libnbd: connection is using TLS -> plaintext ends with STARTTLS ACK", [("NBD_OPT_STARTTLS", "NBD_REP_ACK")] * len(L),
           [(last["option"], last.get("reply"))] * (1 if last["kind"] == "option-reply" else 0) * len(L))


def check_nbdinfo_map(ck, log, s2c):
    """nbdinfo --map prints 'offset length type description' per extent; the BLOCK_STATUS
    chunks on the wire must carry exactly those extents (merged where nbdinfo merged equal
    neighbours) -- compared as the set of (start, type) boundaries."""
    ext = []
    for ln in lines_with(log, "nbdinfo-stdout:"):
        p = ln.split()
        if len(p) >= 3 and p[0].isdigit():
            ext.append((int(p[0]), int(p[1]), int(p[2])))
    wire = []
    reqs = ck.fr("request")
    for f in ck.fr("reply-chunk"):
        if f["_type"] != 5:
            continue
        off = reqs[f["_req"]]["_off"]
        pos = f["frameOffset"] + 20 + 4
        for i in range((f["_len"] - 4) // 8):
            ln_, st = struct.unpack_from(">II", s2c, pos + 8 * i)
            wire.append((off, ln_, st))
            off += ln_
    merged = []
    for e in wire:
        if merged and merged[-1][2] == e[2] and merged[-1][0] + merged[-1][1] == e[0]:
            merged[-1] = (merged[-1][0], merged[-1][1] + e[1], e[2])
        else:
            merged.append(e)
    ck.seq("nbdinfo --map extents vs BLOCK_STATUS payloads", ext, merged)


def check_script(ck, log):
    """Lines our nbdsh scripts print: 'script: KEY=VALUE ...' describing what the client saw."""
    for ln in lines_with(log, "script:"):
        kv = dict(x.split("=", 1) for x in ln.split())
        ev = kv.pop("event")
        if ev == "issued":
            want = (int(kv["type"]), int(kv["offset"]), int(kv["count"]), int(kv["cookie"]))
            have = [(f["_type"], f["_off"], f["_len"], f["_cookie"]) for f in ck.fr("request")]
            ck.seq(f"script issued {want}", [want], [x for x in have if x == want], "subseq")
        elif ev == "completion-order":
            want = [int(x) for x in kv["cookies"].split(",")]
            have = []
            for f in ck.fr("simple-reply") + [f for f in ck.fr("reply-chunk") if f["_flags"] & 1]:
                have.append((f["frameOffset"], f["_cookie"]))
            ck.seq("script completion order vs final replies on the wire", want, [c for _, c in sorted(have)])
        elif ev == "error":
            want = (int(kv["cookie"]), kv["errno"])
            have = [(f["_cookie"], f.get("error")) for f in ck.frames if f["kind"] in ("simple-reply", "reply-chunk")
                    and f.get("error")]
            ck.seq(f"script error {want}", [want], [x for x in have if x == want], "subseq")
        elif ev == "list":
            want = sorted(kv["exports"].split(",")) if int(kv["count"]) else []
            have = sorted(f["_export"] for f in ck.fr("option-reply") if f["_type"] == 2)
            ck.seq("script list exports", want, have)
        elif ev == "context":
            want = (kv["name"], int(kv["id"])) if "id" in kv else kv["name"]
            have = [(f["_ctxname"], f["_ctxid"]) if "id" in kv else f["_ctxname"] for f in ck.fr("option-reply")
                    if f["_type"] == 4]
            ck.seq(f"script meta context {kv['name']}", [want], [x for x in have if x == want], "subseq")
        elif ev == "negotiated":
            have = [f["_ctxname"] for f in ck.fr("option-reply") if f["_type"] == 4 and f["_opt"] == 10]
            ck.seq(f"script negotiated {kv['name']}={kv['value']}", [kv["value"] == "1"], [kv["name"] in have])
        elif ev == "info":
            want = (kv["kind"], kv["value"])
            have = []
            for f in ck.fr("option-reply"):
                if f["_type"] == 3 and f["_info"] in (1, 2):
                    have.append(({1: "name", 2: "description"}[f["_info"]], f["_data"][2:].decode()))
            ck.seq(f"script info {want}", [want], [x for x in have if x == want], "subseq")
        elif ev == "option-refused":
            have = [f["option"] for f in ck.fr("option-reply") if f["_type"] & 0x80000000]
            ck.seq(f"script option refused {kv['option']}", [kv["option"]], have, "subseq")
        else:
            raise SystemExit(f"unknown script event {ev}")


def check_tshark(ck, pcap):
    """tshark 4.0's heuristic NBD dissector decodes (some of the) compact requests and simple
    replies; whatever it decodes must agree with the walk, in order (it skips PDUs it loses
    track of, so this is a subsequence check)."""
    try:
        out = subprocess.run(["/usr/bin/tshark", "-n", "-r", pcap, "--enable-heuristic", "nbd_tcp",
                              "-T", "fields", "-E", "separator=|", "-E", "occurrence=a",
                              "-e", "nbd.magic", "-e", "nbd.type", "-e", "nbd.handle",
                              "-e", "nbd.from", "-e", "nbd.len", "-e", "nbd.error", "-Y", "nbd"],
                             check=True, capture_output=True, text=True, timeout=120).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"tshark failed: {e.stderr}")
    reqs, reps = [], []
    for ln in out.splitlines():
        cols = [c.split(",") for c in ln.split("|")]
        if len(cols[0]) != 1:
            raise SystemExit(f"tshark: several NBD PDUs in one packet, not handled: {ln}")
        mg = int(cols[0][0], 16)
        if mg == REQ_MAGIC:
            reqs.append((int(cols[1][0]), int(cols[2][0], 16), int(cols[3][0], 0), int(cols[4][0])))
        elif mg == SIMPLE_MAGIC:
            reps.append((int(cols[2][0], 16), int(cols[5][0])))
    wire_reqs = [(f["_type"], f["_cookie"], f["_off"], f["_len"]) for f in ck.fr("request") if not f["extendedHeader"]]
    if wire_reqs:
        ck.seq("tshark heuristic compact requests (type, cookie, offset, length)", reqs, wire_reqs, "subseq")
    wire_reps = [(f["_cookie"], f["_err"]) for f in ck.fr("simple-reply")]
    if wire_reps:
        ck.seq("tshark heuristic simple replies (cookie, error)", reps, wire_reps, "subseq")


CHECKS = {
    "qemu-client": lambda ck, log: [check_qemu_client(ck, log, p) for p in sorted({ln.split(":", 1)[0] + ":" for ln in log
                                                                                 if ln.startswith(("qemu-io:", "qemu-img:"))})],
    "qemu-server": lambda ck, log: check_qemu_server(ck, log, "qemu-nbd:"),
    "nbdkit": lambda ck, log: check_nbdkit(ck, log),
    "nbdkit-log": lambda ck, log: check_nbdkit_logfilter(ck, log),
    "nbdkit-log-unordered": lambda ck, log: check_nbdkit_logfilter(ck, log, ordered=False),
    "libnbd": lambda ck, log: check_libnbd(ck, log),
    "script": lambda ck, log: check_script(ck, log),
    "libnbd-tls": lambda ck, log: check_libnbd_tls(ck, log),
    "tshark-none": lambda ck, log: None,
}


def main():
    cap, d = sys.argv[1], sys.argv[2]
    base = os.path.join(d, cap)
    meta = json.load(open(base + ".meta.json"))
    c2s = open(base + ".c2s.bin", "rb").read()
    s2c = open(base + ".s2c.bin", "rb").read()
    frames, notes, mode = walk(c2s, s2c, stop_after_starttls=meta.get("tls", False))
    rows = streams.segments(base + ".pcap", meta["port"])
    frames = order(frames, rows)
    # every byte belongs to exactly one frame (up to STARTTLS for TLS captures)
    for dname, data in (("c2s", c2s), ("s2c", s2c)):
        pos = 0
        for f in sorted((f for f in frames if f["direction"] == dname), key=lambda f: f["frameOffset"]):
            if f["frameOffset"] != pos:
                raise SystemExit(f"{dname}: frames not contiguous at {pos}")
            pos += f["frameLength"]
        if pos != len(data) and not mode.get("tls"):
            raise SystemExit(f"{dname}: frames cover {pos} of {len(data)} bytes")
        if mode.get("tls"):
            mode[f"tlsStart_{dname}"] = pos
            # what follows the STARTTLS ACK must be a TLS handshake record (type 22, version 3.x)
            if len(data) > pos and not (data[pos] == 0x16 and data[pos + 1] == 3):
                raise SystemExit(f"{dname}: bytes after STARTTLS are not a TLS handshake record")
    log = open(base + ".peer.log", encoding="utf-8", errors="replace").read().splitlines()
    ck = Checker(frames)
    for name_ in meta["checks"]:
        if name_ == "tshark":
            check_tshark(ck, base + ".pcap")
        elif name_ == "nbdinfo-map":
            check_nbdinfo_map(ck, log, s2c)
        else:
            CHECKS[name_](ck, log)
    for want in meta.get("expect", []):  # facts the recording script insists on
        k, v = want.split("=", 1)
        have = [f for f in frames if f.get(k) == v or (isinstance(f.get(k), list) and v in f[k])]
        if not have:
            raise SystemExit(f"expected a frame with {k}={v}")
    with open(base + ".expected.jsonl", "w") as fh:
        for f in frames:
            fh.write(json.dumps({k: v for k, v in f.items() if not k.startswith("_")}) + "\n")
    kinds = {}
    for f in frames:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    summary = {"frames": len(frames), "kinds": kinds, "logClaimsChecked": ck.count, "notes": notes, "mode": mode}
    print(f"{cap}: {json.dumps(summary)}", file=sys.stderr)
    meta["summary"] = summary
    with open(base + ".meta.json", "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
