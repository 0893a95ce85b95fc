#!/bin/bash
# qemu-io 10.0 (client) <-> qemu-nbd 10.0 (server), extended headers negotiated.
# One connection: write (FUA), read data, read a hole (OFFSET_HOLE), write-zeroes (FUA|NO_HOLE),
# trim, flush, block status (qemu-io `map`: BLOCK_STATUS_EXT, REQ_ONE), disconnect.
# Server has -A (qemu:allocation-depth offered), the qemu client selects base:allocation only.
source "$(dirname "$0")/lib.sh"
NAME=${1:-qemu10-ext-io}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
truncate -s 1M "$T/disk.img"
PORT=$(free_port)
timeout 60 qemu-nbd -f raw -t --bind 127.0.0.1 -p "$PORT" -A --trace 'nbd_*' "$T/disk.img" 2>"$T/server.log" &
SRV=$!
wait_port "$PORT"
# (wait_port's probe connection is before the capture starts)
sleep 0.5
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
timeout 30 qemu-io --trace 'nbd_*' -f raw "nbd://127.0.0.1:$PORT" \
  -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' -c 'read -P 0 256k 64k' -c 'write -z 64k 64k' \
  -c 'discard 128k 64k' -c 'flush' -c 'map' >"$T/client.out" 2>"$T/client.log"
cap_stop "$OUT_DIR/$NAME.pcap"
stop_pid "$SRV"
{
  echo "# $NAME: peer logs (qemu --trace 'nbd_*'), trimmed to protocol events"
  echo "# qemu-io: $(qemu-io --version | head -1)"
  sed -n 's/^\(nbd_[a-z_]*\) /qemu-io: \1 /p' "$T/client.log"
  sed 's/^/qemu-io-stdout: /' "$T/client.out"
  # drop the probe connection wait_port made before the capture (first negotiation that ended without options)
  awk '/nbd_negotiate_begin/{n++} n>=1' "$T/server.log" | sed -n 's/^\(nbd_[a-z_]*\) /qemu-nbd: \1 /p' \
    | grep -v 'data = 0x' || true
  sed -n 's/^\(nbd_co_send_chunk_read\) .*cookie = \([0-9]*\), offset = \([0-9]*\), data = 0x[0-9a-f]*, len = \([0-9]*\)/qemu-nbd: \1 Send structured read data reply: cookie = \2, offset = \3, len = \4/p' "$T/server.log"
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["qemu-client", "qemu-server"],
 "expect": ["chunkType=NBD_REPLY_TYPE_BLOCK_STATUS_EXT", "chunkType=NBD_REPLY_TYPE_OFFSET_HOLE", "option=NBD_OPT_EXTENDED_HEADERS"]}
J
finish "$NAME" "$PORT"
