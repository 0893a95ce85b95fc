#!/bin/bash
# nbdsh (libnbd 1.14) <-> qemu-nbd 10.0 (server), structured replies (libnbd 1.14 never asks
# for extended headers).  Export "disk1" with a description (-D), -A so the client can select
# base:allocation AND qemu:allocation-depth (two BLOCK_STATUS chunks per request).
# LIST, INFO (NAME, DESCRIPTION, BLOCK_SIZE), LIST_META_CONTEXT, SET_META_CONTEXT + GO,
# WRITE, READ (OFFSET_DATA), READ of a hole (OFFSET_HOLE), READ half data/half hole,
# BLOCK_STATUS, WRITE_ZEROES(NO_HOLE), TRIM, CACHE, WRITE(FUA), FLUSH, READ past the end
# (ERROR chunk with a message), WRITE past the end, DISC.
source "$(dirname "$0")/lib.sh"
NAME=${1:-libnbd-qemu10-sr}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
truncate -s 1M "$T/disk.img"
PORT=$(free_port)
timeout 60 qemu-nbd -f raw -t --bind 127.0.0.1 -p "$PORT" -A -x disk1 -D golden-capture-disk \
  --trace 'nbd_*' "$T/disk.img" 2>"$T/server.log" &
SRV=$!
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
NBD_SR=1 NBD_CONTEXTS=base:allocation,qemu:allocation-depth \
  run_nbdsh "$CAP_DIR/nbdsh-full.py" "nbd://127.0.0.1:$PORT/disk1" "$T/client"
cap_stop "$OUT_DIR/$NAME.pcap"
stop_pid "$SRV"
{
  echo "# $NAME: peer logs (libnbd LIBNBD_DEBUG=1 + our nbdsh script's prints; qemu-nbd --trace 'nbd_*')"
  peer_log_libnbd "$T/client"
  echo "# $(qemu-nbd --version | head -1)"
  sed -n 's/^\(nbd_[a-z_]*\) /qemu-nbd: \1 /p' "$T/server.log" | sed 's/data = 0x[0-9a-f]*, //'
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["libnbd", "script", "qemu-server", "tshark"],
 "expect": ["chunkType=NBD_REPLY_TYPE_OFFSET_HOLE", "chunkType=NBD_REPLY_TYPE_ERROR", "chunkType=NBD_REPLY_TYPE_BLOCK_STATUS", "info=NBD_INFO_DESCRIPTION", "info=NBD_INFO_NAME"]}
J
finish "$NAME" "$PORT"
