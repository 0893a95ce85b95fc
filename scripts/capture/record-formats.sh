#!/bin/bash
# Capture-file format variants:
#  - nbdkit-oldstyle-nano.pcap: the oldstyle session recorded again with
#    tcpdump --time-stamp-precision=nano (pcap magic 0xa1b23c4d, nanosecond timestamps);
#  - libnbd-nbdkit-sr.pcapng: `tshark -F pcapng` copy of libnbd-nbdkit-sr.pcap (run after
#    record-libnbd-nbdkit-sr.sh); its byte streams must equal the pcap's .c2s.bin/.s2c.bin, and
#    it shares libnbd-nbdkit-sr.expected.jsonl.
source "$(dirname "$0")/lib.sh"
TCPDUMP_EXTRA=--time-stamp-precision=nano bash "$CAP_DIR/record-nbdkit-oldstyle.sh" nbdkit-oldstyle-nano
magic=$(od -An -tx1 -N4 "$OUT_DIR/nbdkit-oldstyle-nano.pcap" | tr -d ' ')
case $magic in
  4d3cb2a1|a1b23c4d) log "nbdkit-oldstyle-nano.pcap: nanosecond pcap (magic $magic)";;
  *) log "nbdkit-oldstyle-nano.pcap: not a nanosecond pcap (magic $magic)"; exit 1;;
esac

SRC=libnbd-nbdkit-sr
[ -f "$OUT_DIR/$SRC.pcap" ] || { log "$SRC.pcap missing: run record-libnbd-nbdkit-sr.sh first"; exit 1; }
rm -f "$OUT_DIR/$SRC.pcapng"
timeout 60 tshark -r "$OUT_DIR/$SRC.pcap" -F pcapng -w "$OUT_DIR/$SRC.pcapng"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
PORT=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['port'])" "$OUT_DIR/$SRC.meta.json")
/usr/bin/python3 "$CAP_DIR/streams.py" "$OUT_DIR/$SRC.pcapng" "$PORT" "$T/ng"
cmp "$T/ng.c2s.bin" "$OUT_DIR/$SRC.c2s.bin"
cmp "$T/ng.s2c.bin" "$OUT_DIR/$SRC.s2c.bin"
[ "$(od -An -tx1 -N4 "$OUT_DIR/$SRC.pcapng" | tr -d ' ')" = 0a0d0d0a ] || { log "$SRC.pcapng is not pcapng"; exit 1; }
log "$SRC.pcapng: pcapng copy, byte streams identical to $SRC.pcap"
