#!/bin/bash
# qemu-img map --output=json (qemu 10.0 client) <-> qemu-nbd 10.0 -A serving a qcow2 overlay with a
# backing file, extended headers.  The client selects the qemu:allocation-depth context through
# the nbd driver's x-dirty-bitmap option (context id 1 on qemu-nbd), so the BLOCK_STATUS_EXT
# chunks carry allocation depths (2 = backing, 1 = local, 0 = absent), REQ_ONE each.
source "$(dirname "$0")/lib.sh"
NAME=${1:-qemu10-ext-img-map-depth}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
timeout 30 qemu-img create -q -f qcow2 "$T/base.qcow2" 1M
timeout 30 qemu-io -f qcow2 -c 'write -P 0x11 0 128k' "$T/base.qcow2" >/dev/null
timeout 30 qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/top.qcow2"
timeout 30 qemu-io -f qcow2 -c 'write -P 0x22 64k 128k' "$T/top.qcow2" >/dev/null
PORT=$(free_port)
timeout 60 qemu-nbd -f qcow2 -t --bind 127.0.0.1 -p "$PORT" -A --trace 'nbd_*' "$T/top.qcow2" 2>"$T/server.log" &
SRV=$!
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
timeout 30 qemu-img --trace 'nbd_*' map --output=json --image-opts \
  "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT,x-dirty-bitmap=qemu:allocation-depth" \
  >"$T/client.out" 2>"$T/client.log"
cap_stop "$OUT_DIR/$NAME.pcap"
stop_pid "$SRV"
{
  echo "# $NAME: peer logs (qemu-img and qemu-nbd --trace 'nbd_*'), trimmed to protocol events"
  echo "# qemu-img: $(qemu-img --version | head -1)"
  sed -n 's/^\(nbd_[a-z_]*\) /qemu-img: \1 /p' "$T/client.log"
  sed 's/^/qemu-img-stdout: /' "$T/client.out"
  sed -n 's/^\(nbd_[a-z_]*\) /qemu-nbd: \1 /p' "$T/server.log" | sed 's/data = 0x[0-9a-f]*, //'
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["qemu-client", "qemu-server"],
 "expect": ["chunkType=NBD_REPLY_TYPE_BLOCK_STATUS_EXT", "option=NBD_OPT_EXTENDED_HEADERS"]}
J
finish "$NAME" "$PORT"
