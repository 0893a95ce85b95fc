"""A raw-socket NBD client, independent of our codec and of libnbd, for what no real client sends.

Usage: python3 raw_nbd.py PORT SCENARIO [NAME]

Scenarios (each prints one JSON object on the last line):
  info        INFO asking for every info type (EXPORT, NAME, DESCRIPTION, BLOCK_SIZE, INIT_FLAGS = 4):
              the raw NBD_INFO_INIT_FLAGS value among the replies (libnbd 1.14 has no get_init_flags).
  options     error replies: unknown option, LIST with data, SET_META_CONTEXT before structured replies,
              STARTTLS, INFO for an unknown export, duplicate STRUCTURED_REPLY, then ABORT.
  commands    GO, then an unknown command, a READ beyond the end, a WRITE (EPERM if read-only), DISC.
  exportname  EXPORT_NAME with and without NO_ZEROES: the reply is 10 or 134 bytes.
"""
import json
import socket
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9

port, scenario = int(sys.argv[1]), sys.argv[2]
name = (sys.argv[3] if len(sys.argv) > 3 else "").encode()


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise EOFError("server closed after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def connect(client_flags=3):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    magic, opt, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting"
    s.sendall(struct.pack(">I", client_flags))
    return s, hflags


def send_option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def read_replies(s, opt):
    """Replies up to the final one: [(type, data)]."""
    out = []
    while True:
        magic, o, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        assert magic == REPLY_MAGIC, hex(magic)
        assert o == opt, "reply for option %d, expected %d" % (o, opt)
        data = recv_exact(s, length)
        out.append((rtype, data))
        if rtype == 1 or rtype & 0x80000000:
            return out


def info_data(export, types):
    return struct.pack(">I", len(export)) + export + struct.pack(">H", len(types)) + b"".join(struct.pack(">H", t) for t in types)


result = {}
if scenario == "info":
    s, hflags = connect()
    result["handshake_flags"] = hflags
    send_option(s, 6, info_data(name, [0, 1, 2, 3, 4]))
    replies = read_replies(s, 6)
    assert replies[-1][0] == 1, "INFO failed: %x" % replies[-1][0]
    for rtype, data in replies[:-1]:
        assert rtype == 3, rtype
        (itype,) = struct.unpack(">H", data[:2])
        if itype == 0:
            size, tflags = struct.unpack(">QH", data[2:])
            result["size"], result["transmission_flags"] = size, tflags
        elif itype == 1:
            result["name"] = data[2:].decode()
        elif itype == 2:
            result["description"] = data[2:].decode()
        elif itype == 3:
            result["block_size"] = list(struct.unpack(">III", data[2:]))
        elif itype == 4:
            assert len(data) == 4, "INIT_FLAGS length %d" % len(data)
            (result["init_flags"],) = struct.unpack(">H", data[2:])
    send_option(s, 2)
    result["abort"] = read_replies(s, 2)[-1][0]
    s.close()
elif scenario == "options":
    s, _ = connect()
    checks = {}
    send_option(s, 0x4242, b"abc")
    checks["unknown option"] = read_replies(s, 0x4242)[-1][0]
    send_option(s, 3, b"x")
    checks["LIST with data"] = read_replies(s, 3)[-1][0]
    q = b"base:allocation"
    meta = struct.pack(">I", len(name)) + name + struct.pack(">II", 1, len(q)) + q
    send_option(s, 10, meta)
    checks["SET_META_CONTEXT before structured replies"] = read_replies(s, 10)[-1][0]
    send_option(s, 5)
    checks["STARTTLS"] = read_replies(s, 5)[-1][0]
    send_option(s, 6, info_data(b"no-such-export", []))
    checks["INFO of an unknown export"] = read_replies(s, 6)[-1][0]
    send_option(s, 8, b"x")
    checks["STRUCTURED_REPLY with data"] = read_replies(s, 8)[-1][0]
    send_option(s, 11)
    checks["EXTENDED_HEADERS"] = read_replies(s, 11)[-1][0]
    send_option(s, 8)
    checks["STRUCTURED_REPLY after EXTENDED_HEADERS"] = read_replies(s, 8)[-1][0]
    send_option(s, 2)
    checks["ABORT"] = read_replies(s, 2)[-1][0]
    s.settimeout(5)
    checks["closed after ABORT"] = s.recv(1) == b""
    result["replies"] = checks
elif scenario == "commands":
    s, _ = connect()
    send_option(s, 7, info_data(name, []))
    replies = read_replies(s, 7)
    assert replies[-1][0] == 1
    size, tflags = None, None
    for rtype, data in replies[:-1]:
        if struct.unpack(">H", data[:2])[0] == 0:
            size, tflags = struct.unpack(">QH", data[2:])
    errors = {}

    def request(cmd, flags, cookie, offset, length, payload=b""):
        s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, cmd, cookie, offset, length) + payload)
        magic, err, c = struct.unpack(">IIQ", recv_exact(s, 16))
        assert magic == 0x67446698 and c == cookie, (hex(magic), c)
        return err

    errors["unknown command 0x42"] = request(0x42, 0, 1, 0, 0)
    errors["READ beyond the end"] = request(0, 0, 2, size - 512, 4096)
    errors["unknown command flag"] = request(0, 0x8000, 3, 0, 512)
    errors["WRITE"] = request(1, 0, 4, 0, 512, b"\x01" * 512)
    errors["WRITE beyond the end"] = request(1, 0, 5, size, 512, b"\x01" * 512)
    errors["TRIM beyond the end"] = request(4, 0, 6, size, 4096)
    errors["BLOCK_STATUS without contexts"] = request(7, 0, 7, 0, 4096)
    errors["FLUSH"] = request(3, 0, 8, 0, 0)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 9, 0, 0))
    s.settimeout(5)
    errors["closed after DISC"] = s.recv(1) == b""
    result["errors"] = errors
    result["transmission_flags"] = tflags
elif scenario == "exportname":
    # C_FIXED_NEWSTYLE|C_NO_ZEROES, C_FIXED_NEWSTYLE only, and a non-fixed newstyle client (flags 0).
    for flags, want in ((3, 10), (1, 134), (0, 134)):
        s, _ = connect(flags)
        send_option(s, 1, name)
        reply = recv_exact(s, want)
        size, tflags = struct.unpack(">QH", reply[:10])
        assert reply[10:] == bytes(want - 10)
        s.settimeout(1)
        try:
            extra = s.recv(1)
        except socket.timeout:
            extra = b""
        assert extra == b"", "more bytes than %d after EXPORT_NAME" % want
        result["flags_%d" % flags] = {"length": want, "size": size, "flags": tflags}
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 1, 0, 0))
        s.close()
    s, _ = connect()
    send_option(s, 1, b"no-such-export")
    s.settimeout(5)
    result["unknown export closes"] = s.recv(1) == b""
else:
    raise SystemExit("unknown scenario " + scenario)
print(json.dumps(result))
