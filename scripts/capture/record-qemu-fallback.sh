#!/bin/bash
# The qemu 10.0 client's fallback chain (EXTENDED_HEADERS -> STRUCTURED_REPLY -> simple):
#  NAME  (default qemu10-client-nbdkit-sr): qemu-io <-> nbdkit 1.32 memory plugin: EXTENDED_HEADERS
#        refused (ERR_UNSUP), STRUCTURED_REPLY acked, SET_META_CONTEXT, GO; write/read/
#        write-zeroes/discard/flush/map (compact requests, structured READ replies, simple replies for
#        the rest, BLOCK_STATUS chunk).
#  NAME2 (default qemu10-client-nbd-server): qemu-io <-> nbd-server 3.24: EXTENDED_HEADERS and
#        STRUCTURED_REPLY both refused (ERR_UNSUP), GO, same commands with simple replies only
#        (no block status: qemu-io's map then reports everything allocated without asking).
source "$(dirname "$0")/lib.sh"
NAME=${1:-qemu10-client-nbdkit-sr}
NAME2=${2:-qemu10-client-nbd-server}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
CMDS=(-c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' -c 'read -P 0 256k 4k' -c 'write -z 64k 64k'
      -c 'discard 128k 64k' -c 'flush' -c 'map')

for which in nbdkit nbd-server; do
  PORT=$(free_port)
  if [ $which = nbdkit ]; then
    N=$NAME
    timeout 60 nbdkit -f -v -i 127.0.0.1 -p "$PORT" -P "$T/nbdkit.pid" --filter=log memory 1M \
      logfile="$T/requests.log" 2>"$T/server.log" &
    SRV=$!
  else
    N=$NAME2
    truncate -s 1M "$T/disk.img"
    cat >"$T/config" <<C
[generic]
port = $PORT
listenaddr = 127.0.0.1
allowlist = true
[disk1]
exportname = $T/disk.img
flush = true
fua = true
trim = true
C
    timeout 60 nbd-server -C "$T/config" -d >"$T/server.log" 2>&1 &
    SRV=$!
  fi
  wait_port "$PORT"
  cap_start "$OUT_DIR/$N.pcap" "$PORT"
  if [ $which = nbdkit ]; then URI="nbd://127.0.0.1:$PORT"; else URI="nbd://127.0.0.1:$PORT/disk1"; fi
  timeout 30 qemu-io --trace 'nbd_*' -f raw "$URI" "${CMDS[@]}" >"$T/client.out" 2>"$T/client.log"
  cap_stop "$OUT_DIR/$N.pcap"
  stop_pid "$SRV"
  {
    echo "# $N: peer logs (qemu-io --trace 'nbd_*'; server log)"
    echo "# qemu-io: $(qemu-io --version | head -1)"
    sed -n 's/^\(nbd_[a-z_]*\) /qemu-io: \1 /p' "$T/client.log"
    sed 's/^/qemu-io-stdout: /' "$T/client.out"
    if [ $which = nbdkit ]; then
      echo "# $(nbdkit --version)"
      trim_nbdkit "$T/server.log" | grep -E '^nbdkit: [a-z]+\[1\]|: debug: (log|memory): |newstyle|replying|client' || true
      sed 's/^/nbdkit-log: /' "$T/requests.log"
    else
      echo "# $(nbd-server -V 2>&1 | grep -m1 version)"
      sed 's/^/nbd-server: /' "$T/server.log"
    fi
  } >"$OUT_DIR/$N.peer.log"
  if [ $which = nbdkit ]; then
    cat >"$OUT_DIR/$N.meta.json" <<J
{"name": "$N", "port": $PORT, "checks": ["qemu-client", "nbdkit", "nbdkit-log", "tshark"],
 "expect": ["reply=NBD_REP_ERR_UNSUP", "chunkType=NBD_REPLY_TYPE_BLOCK_STATUS", "kind=simple-reply"]}
J
  else
    cat >"$OUT_DIR/$N.meta.json" <<J
{"name": "$N", "port": $PORT, "checks": ["qemu-client", "tshark"],
 "expect": ["reply=NBD_REP_ERR_UNSUP", "kind=simple-reply"]}
J
  fi
  finish "$N" "$PORT"
done
