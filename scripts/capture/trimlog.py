#!/usr/bin/python3
"""Trim a peer's debug log to the protocol-relevant lines (kept as NAME.peer.log).

usage: trimlog.py libnbd|nbdkit FILE [PREFIX]
libnbd: records start with 'libnbd: debug:'; continuation lines (buffer dumps) are folded
        into their record and buffers are replaced by '<buffer>'; state transitions and poll
        lines are dropped.
nbdkit: keeps negotiation, flags and per-request lines, drops thread start/exit chatter.
"""
import re
import sys

kind, path = sys.argv[1], sys.argv[2]
prefix = sys.argv[3] if len(sys.argv) > 3 else ""
text = open(path, encoding="utf-8", errors="replace").read().splitlines()
out = []
if kind == "libnbd":
    recs = []
    for ln in text:
        if ln.startswith("libnbd: debug:") or ln.startswith("libnbd: "):
            recs.append(ln)
        elif recs:
            recs[-1] += "\n" + ln
    for r in recs:
        if ": transition: " in r or ": poll " in r or ": event " in r:
            continue
        r = re.sub(r'buf="(?:[^"\\]|\\.)*"', "buf=<buffer>", r, flags=re.S)
        r = re.sub(r"buf=\n.*?\n(?=\S*\s*count=|\" count=)", "buf=<buffer>", r, flags=re.S)
        if "\n" in r:
            # a hexdump we could not parse: keep only first and last line
            parts = r.split("\n")
            r = parts[0] + " <dump> " + parts[-1]
        out.append(prefix + r)
elif kind == "nbdkit":
    for ln in text:
        if "worker thread" in ln or ": debug: registering" in ln or "registered" in ln:
            continue
        out.append(prefix + ln)
print("\n".join(out))
