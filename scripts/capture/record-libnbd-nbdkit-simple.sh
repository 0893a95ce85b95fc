#!/bin/bash
# nbdsh (libnbd 1.14) <-> nbdkit 1.32, read-only export (-r, pattern plugin), client does not
# ask for structured replies (set_request_structured_replies(False)): simple replies only.
# LIST, INFO (NAME), GO, READ x2 (simple reply + data), WRITE / WRITE_ZEROES / TRIM to the
# read-only export (EPERM simple replies, payload-less), FLUSH, CACHE, READ past the end
# (EINVAL simple reply, no data), DISC.
source "$(dirname "$0")/lib.sh"
NAME=${1:-libnbd-nbdkit-simple}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
PORT=$(free_port)
timeout 60 nbdkit -f -v -r -i 127.0.0.1 -p "$PORT" -P "$T/nbdkit.pid" \
  --filter=log pattern 64K logfile="$T/requests.log" 2>"$T/server.log" &
SRV=$!
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
NBD_SR=0 NBD_CMDS=read,read2,write,zero,trim,flush,cache,readpastend \
  run_nbdsh "$CAP_DIR/nbdsh-simple.py" "nbd://127.0.0.1:$PORT/" "$T/client"
cap_stop "$OUT_DIR/$NAME.pcap"
stop_pid "$SRV"
{
  echo "# $NAME: peer logs (libnbd LIBNBD_DEBUG=1 + our nbdsh script's prints; nbdkit -v; nbdkit log filter)"
  peer_log_libnbd "$T/client"
  echo "# $(nbdkit --version)"
  trim_nbdkit "$T/server.log" | grep -E '^nbdkit: [a-z]+\[1\]|: debug: (log|pattern): |newstyle|replying|client' || true
  sed 's/^/nbdkit-log: /' "$T/requests.log"
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["libnbd", "script", "nbdkit", "nbdkit-log", "tshark"],
 "expect": ["error=NBD_EPERM", "error=NBD_EINVAL", "kind=simple-reply"]}
J
finish "$NAME" "$PORT"
