#!/bin/bash
# nbdsh (libnbd 1.14) <-> nbd-server 3.24 (reference server; config file in a temp dir,
# [generic] port/listenaddr=127.0.0.1/allowlist=true, one export "disk1" on a temp file, run in
# the foreground with -d).  The client asks for structured replies and nbd-server refuses
# (NBD_REP_ERR_UNSUP), so the session uses simple replies.  LIST, INFO (size 0 quirk), GO,
# READ, WRITE, WRITE(FUA), WRITE_ZEROES, TRIM, FLUSH, READ and WRITE past the end, DISC.
source "$(dirname "$0")/lib.sh"
NAME=${1:-libnbd-nbd-server}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
truncate -s 1M "$T/disk.img"
PORT=$(free_port)
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
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
NBD_SR=1 NBD_CMDS=read,write,fua,zero,trim,flush,readpastend,writepastend \
  run_nbdsh "$CAP_DIR/nbdsh-simple.py" "nbd://127.0.0.1:$PORT/disk1" "$T/client"
cap_stop "$OUT_DIR/$NAME.pcap"
stop_pid "$SRV"
{
  echo "# $NAME: peer logs (libnbd LIBNBD_DEBUG=1 + our nbdsh script's prints; nbd-server -d output)"
  peer_log_libnbd "$T/client"
  echo "# $(nbd-server -V 2>&1 | grep -m1 version)"
  sed 's/^/nbd-server: /' "$T/server.log"
  echo "# nbd-server config:"; sed "s|$T|TMPDIR|; s/^/nbd-server-config: /" "$T/config"
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["libnbd", "script", "tshark"],
 "expect": ["reply=NBD_REP_ERR_UNSUP", "kind=simple-reply", "option=NBD_OPT_LIST"]}
J
finish "$NAME" "$PORT"
