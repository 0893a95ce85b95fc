#!/bin/bash
# Out-of-order replies: nbdsh (libnbd 1.14) issues several aio requests at once on one
# connection; nbdkit 1.32's eval plugin (thread model parallel) sleeps 0.8/0.6/0.4/0.2/0 s in
# pread for offsets 0/4k/8k/12k/16k, so the replies come back in reverse order.
#  NAME  (default nbdkit-ooo-sr):     structured replies: OFFSET_DATA chunks + a BLOCK_STATUS
#                                     chunk (extents have no delay, so it comes first).
#  NAME2 (default nbdkit-ooo-simple): no structured replies: simple READ replies carrying data,
#                                     out of order (a decoder must match them by cookie).
source "$(dirname "$0")/lib.sh"
NAME=${1:-nbdkit-ooo-sr}
NAME2=${2:-nbdkit-ooo-simple}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for sr in 1 0; do
  if [ $sr = 1 ]; then N=$NAME; else N=$NAME2; fi
  PORT=$(free_port)
  rm -f "$T/requests.log"
  timeout 60 nbdkit -f -v -i 127.0.0.1 -p "$PORT" -P "$T/nbdkit.pid" --filter=log eval \
    thread_model='echo parallel' get_size='echo 1048576' \
    pread='o=$(( $4 / 4096 )); [ $o -lt 4 ] && sleep 0.$(( 8 - 2 * o )); head -c "$3" /dev/zero | tr "\0" "\\$(printf %o $(( 65 + o )))"' \
    logfile="$T/requests.log" 2>"$T/server.log" &
  SRV=$!
  wait_port "$PORT"
  cap_start "$OUT_DIR/$N.pcap" "$PORT"
  NBD_SR=$sr run_nbdsh "$CAP_DIR/nbdsh-ooo.py" "nbd://127.0.0.1:$PORT/" "$T/client"
  cap_stop "$OUT_DIR/$N.pcap"
  stop_pid "$SRV"
  {
    echo "# $N: peer logs (libnbd LIBNBD_DEBUG=1 + our nbdsh script's prints; nbdkit -v; nbdkit log filter)"
    peer_log_libnbd "$T/client"
    echo "# $(nbdkit --version)"
    trim_nbdkit "$T/server.log" | grep -E '^nbdkit: [a-z]+\[1\]|: debug: (log|eval): |newstyle|replying|client' || true
    sed 's/^/nbdkit-log: /' "$T/requests.log"
  } >"$OUT_DIR/$N.peer.log"
  cat >"$OUT_DIR/$N.meta.json" <<J
{"name": "$N", "port": $PORT, "checks": ["libnbd", "script", "nbdkit", "nbdkit-log-unordered", "tshark"],
 "expect": []}
J
  finish "$N" "$PORT"
done
