#!/usr/bin/python3
"""Extract the two TCP byte streams of a one-connection NBD capture with tshark.

usage: streams.py CAPTURE.pcap SERVER_PORT OUT_PREFIX
writes OUT_PREFIX.c2s.bin and OUT_PREFIX.s2c.bin.

Two independent extractions must agree byte for byte:
  1. our own reassembly of `tcp.payload` by relative sequence number (no gaps allowed,
     retransmitted bytes must be identical), whose length must equal the FIN's relative
     sequence number - 1 when a FIN was captured;
  2. tshark's `follow,tcp,raw` output.
"""
import json
import subprocess
import sys

TSHARK = "/usr/bin/tshark"


def tshark(args):
    return subprocess.run([TSHARK, "-n", *args], check=True, capture_output=True, text=True, timeout=120).stdout


def segments(pcap, port):
    """Per-packet rows: frame number, direction, relative seq, payload bytes, flags."""
    out = tshark(["-r", pcap, "-o", "tcp.relative_sequence_numbers:TRUE", "-o", "tcp.desegment_tcp_streams:FALSE",
                  "-T", "fields", "-E", "separator=|",
                  "-e", "frame.number", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.dstport",
                  "-e", "tcp.seq", "-e", "tcp.len", "-e", "tcp.flags.syn", "-e", "tcp.flags.fin",
                  "-e", "tcp.flags.reset", "-e", "tcp.payload", "-e", "frame.time_epoch"])
    rows = []
    for line in out.splitlines():
        if not line.strip():
            continue
        f = line.split("|")
        num, stream, sport, dport, seq, tlen, syn, fin, rst, payload, t = f
        sport, dport = int(sport), int(dport)
        if port not in (sport, dport):
            raise SystemExit(f"packet {num} is not on port {port}")
        rows.append({
            "frame": int(num), "stream": int(stream),
            "dir": "c2s" if dport == port else "s2c",
            "seq": int(seq), "len": int(tlen),
            "syn": syn in ("1", "True"), "fin": fin in ("1", "True"), "rst": rst in ("1", "True"),
            "payload": bytes.fromhex(payload.replace(":", "")) if payload else b"",
            "time": t,
        })
    streams = {r["stream"] for r in rows}
    if streams != {0}:
        raise SystemExit(f"expected exactly one TCP connection, found streams {sorted(streams)}")
    return rows


def reassemble(rows, direction):
    buf = bytearray()
    filled = []  # list of (start, end)
    fin_seq = None
    owner = {}  # byte offset of each segment start -> frame number
    for r in rows:
        if r["dir"] != direction:
            continue
        if r["fin"]:
            fs = r["seq"] + r["len"]
            if fin_seq is not None and fin_seq != fs:
                raise SystemExit(f"{direction}: FIN at two sequence numbers")
            fin_seq = fs
        if not r["len"]:
            continue
        if len(r["payload"]) != r["len"]:
            raise SystemExit(f"frame {r['frame']}: payload truncated ({len(r['payload'])} of {r['len']}); snaplen?")
        start = r["seq"] - 1  # relative seq 1 = first data byte
        end = start + r["len"]
        if end > len(buf):
            buf.extend(b"\0" * (end - len(buf)))
        for a, b in filled:
            lo, hi = max(a, start), min(b, end)
            if lo < hi and buf[lo:hi] != r["payload"][lo - start:hi - start]:
                raise SystemExit(f"frame {r['frame']}: retransmission differs")
        buf[start:end] = r["payload"]
        filled.append((start, end))
        owner.setdefault(start, r["frame"])
    # coverage check
    covered = 0
    for a, b in sorted(filled):
        if a > covered:
            raise SystemExit(f"{direction}: gap in stream at byte {covered}")
        covered = max(covered, b)
    if covered != len(buf):
        raise SystemExit(f"{direction}: coverage {covered} != {len(buf)}")
    if fin_seq is not None and fin_seq - 1 != len(buf):
        raise SystemExit(f"{direction}: FIN says {fin_seq - 1} bytes, reassembled {len(buf)}")
    return bytes(buf), fin_seq is not None


def follow_raw(pcap, port):
    out = tshark(["-r", pcap, "-qz", "follow,tcp,raw,0"])
    lines = out.splitlines()
    node = {}
    data = {"0": bytearray(), "1": bytearray()}
    in_body = False
    for ln in lines:
        if ln.startswith("Node 0:") or ln.startswith("Node 1:"):
            idx = ln[5]
            node[idx] = int(ln.rsplit(":", 1)[1])
            in_body = True
            continue
        if not in_body or ln.startswith("====") or not ln.strip():
            continue
        if ln.startswith("\t"):
            data["1"].extend(bytes.fromhex(ln.strip()))
        else:
            data["0"].extend(bytes.fromhex(ln.strip()))
    res = {}
    for idx, port_of in node.items():
        res["s2c" if port_of == port else "c2s"] = bytes(data[idx])
    return res


def main():
    pcap, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rows = segments(pcap, port)
    out = {}
    for d in ("c2s", "s2c"):
        data, had_fin = reassemble(rows, d)
        out[d] = data
        print(f"{prefix.rsplit('/', 1)[-1]}.{d}.bin: {len(data)} bytes (FIN {'seen, length agrees' if had_fin else 'not seen'})",
              file=sys.stderr)
    fol = follow_raw(pcap, port)
    for d in ("c2s", "s2c"):
        if fol.get(d, b"") != out[d]:
            raise SystemExit(f"{d}: follow,tcp,raw ({len(fol.get(d, b''))} bytes) disagrees with reassembly ({len(out[d])})")
        with open(f"{prefix}.{d}.bin", "wb") as fh:
            fh.write(out[d])


if __name__ == "__main__":
    main()
