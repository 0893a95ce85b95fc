#!/bin/bash
# nbdsh (libnbd 1.14) <-> nbdkit 1.32 memory plugin (+exportname filter for a list and a
# description, +log filter for a per-request server log), structured replies.
# LIST, INFO (NAME, DESCRIPTION), LIST_META_CONTEXT, SET_META_CONTEXT base:allocation + GO,
# WRITE, READ, BLOCK_STATUS, WRITE_ZEROES(NO_HOLE), TRIM, CACHE, WRITE(FUA), FLUSH,
# READ past the end (error chunk), WRITE past the end (simple error reply), DISC.
source "$(dirname "$0")/lib.sh"
NAME=${1:-libnbd-nbdkit-sr}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
PORT=$(free_port)
timeout 60 nbdkit -f -v -i 127.0.0.1 -p "$PORT" -P "$T/nbdkit.pid" \
  --filter=log --filter=exportname memory 1M \
  exportname=disk1 exportname=disk2 exportname-list=explicit default-export=disk1 exportdesc=fixed:golden-capture-disk \
  logfile="$T/requests.log" 2>"$T/server.log" &
SRV=$!
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
NBD_SR=1 run_nbdsh "$CAP_DIR/nbdsh-full.py" "nbd://127.0.0.1:$PORT/disk1" "$T/client"
cap_stop "$OUT_DIR/$NAME.pcap"
stop_pid "$SRV"
{
  echo "# $NAME: peer logs (libnbd LIBNBD_DEBUG=1 + our nbdsh script's prints; nbdkit -v; nbdkit log filter)"
  peer_log_libnbd "$T/client"
  echo "# $(nbdkit --version)"
  trim_nbdkit "$T/server.log" | grep -E '^nbdkit: [a-z]+\[1\]|: debug: (log|memory|exportname): |newstyle|replying|client' || true
  sed 's/^/nbdkit-log: /' "$T/requests.log"
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["libnbd", "script", "nbdkit", "nbdkit-log", "tshark"],
 "expect": ["chunkType=NBD_REPLY_TYPE_BLOCK_STATUS", "chunkType=NBD_REPLY_TYPE_ERROR", "info=NBD_INFO_DESCRIPTION", "info=NBD_INFO_NAME", "option=NBD_OPT_LIST"]}
J
finish "$NAME" "$PORT"
