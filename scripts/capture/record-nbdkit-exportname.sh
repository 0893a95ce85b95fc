#!/bin/bash
# NBD_OPT_EXPORT_NAME (no option reply; the server answers with size + flags [+ 124 zeroes]):
# nbdsh (libnbd 1.14) <-> nbdkit 1.32 with its handshake flags masked, so the session is
# non-fixed newstyle and EXPORT_NAME is the only option libnbd may send.
#  NAME  (default nbdkit-exportname-zeroes):  --mask-handshake=0 -> hflags 0, client flags 0,
#        134-byte EXPORT_NAME reply (124 zero bytes).
#  NAME2 (default nbdkit-exportname-nozeroes): --mask-handshake=2 -> hflags NO_ZEROES only, client
#        sets C_NO_ZEROES, 10-byte EXPORT_NAME reply.
# Then READ, WRITE, FLUSH, READ past the end (simple replies), DISC.
source "$(dirname "$0")/lib.sh"
NAME=${1:-nbdkit-exportname-zeroes}
NAME2=${2:-nbdkit-exportname-nozeroes}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for mask in 0 2; do
  if [ $mask = 0 ]; then N=$NAME; else N=$NAME2; fi
  PORT=$(free_port)
  rm -f "$T/requests.log"
  timeout 60 nbdkit -f -v --mask-handshake=$mask -i 127.0.0.1 -p "$PORT" -P "$T/nbdkit.pid" \
    --filter=log memory 64K logfile="$T/requests.log" 2>"$T/server.log" &
  SRV=$!
  wait_port "$PORT"
  cap_start "$OUT_DIR/$N.pcap" "$PORT"
  NBD_OPTMODE=0 NBD_SR=1 NBD_CMDS=read,write,flush,readpastend \
    run_nbdsh "$CAP_DIR/nbdsh-simple.py" "nbd://127.0.0.1:$PORT/disk1" "$T/client"
  cap_stop "$OUT_DIR/$N.pcap"
  stop_pid "$SRV"
  {
    echo "# $N: peer logs (libnbd LIBNBD_DEBUG=1 + our nbdsh script's prints; nbdkit -v; nbdkit log filter)"
    peer_log_libnbd "$T/client"
    echo "# $(nbdkit --version)"
    trim_nbdkit "$T/server.log" | grep -E '^nbdkit: [a-z]+\[1\]|: debug: (log|memory): |newstyle|replying|client' || true
    sed 's/^/nbdkit-log: /' "$T/requests.log"
  } >"$OUT_DIR/$N.peer.log"
  cat >"$OUT_DIR/$N.meta.json" <<J
{"name": "$N", "port": $PORT, "checks": ["libnbd", "script", "nbdkit", "nbdkit-log", "tshark"],
 "expect": ["kind=export-name-reply", "option=NBD_OPT_EXPORT_NAME"]}
J
  finish "$N" "$PORT"
done
