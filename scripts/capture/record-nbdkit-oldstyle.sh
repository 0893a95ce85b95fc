#!/bin/bash
# nbdsh (libnbd 1.14) <-> nbdkit 1.32 --oldstyle (memory plugin): 152-byte oldstyle greeting,
# no options, then simple replies.  READ, WRITE, WRITE(FUA), WRITE_ZEROES, TRIM, FLUSH, READ past
# the end, DISC.  (nbdkit advertises FLUSH/FUA/TRIM/ZERO here; see the README for what it does.)
source "$(dirname "$0")/lib.sh"
NAME=${1:-nbdkit-oldstyle}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
PORT=$(free_port)
timeout 60 nbdkit -f -v --oldstyle -i 127.0.0.1 -p "$PORT" -P "$T/nbdkit.pid" \
  --filter=log memory 64K logfile="$T/requests.log" 2>"$T/server.log" &
SRV=$!
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
NBD_OPTMODE=0 NBD_SR=0 NBD_CMDS=read,write,fua,zero,trim,flush,readpastend \
  run_nbdsh "$CAP_DIR/nbdsh-simple.py" "nbd://127.0.0.1:$PORT/" "$T/client"
cap_stop "$OUT_DIR/$NAME.pcap"
stop_pid "$SRV"
{
  echo "# $NAME: peer logs (libnbd LIBNBD_DEBUG=1 + our nbdsh script's prints; nbdkit -v; nbdkit log filter)"
  peer_log_libnbd "$T/client"
  echo "# $(nbdkit --version)"
  trim_nbdkit "$T/server.log" | grep -E '^nbdkit: [a-z]+\[1\]|: debug: (log|memory): |oldstyle|client' || true
  sed 's/^/nbdkit-log: /' "$T/requests.log"
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["libnbd", "script", "nbdkit-log", "tshark"],
 "expect": ["kind=oldstyle-greeting", "kind=simple-reply"]}
J
finish "$NAME" "$PORT"
