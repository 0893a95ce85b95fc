#!/bin/bash
# STARTTLS: nbdsh (libnbd 1.14) <-> nbdkit 1.32 --tls=require --tls-psk=FILE (memory plugin).
#  NAME (default nbdkit-tls-psk): the client requires TLS with a PSK: greeting, client flags,
#     NBD_OPT_STARTTLS, NBD_REP_ACK in plaintext, then a TLS 1.3 PSK session (GO, READ, DISC
#     inside).  The expected list stops at the STARTTLS ACK.
#  NAME2 (default nbdkit-tls-required-plaintext): a client without TLS against the same server:
#     LIST / INFO / GO refused with NBD_REP_ERR_TLS_REQD, then ABORT.
source "$(dirname "$0")/lib.sh"
NAME=${1:-nbdkit-tls-psk}
NAME2=${2:-nbdkit-tls-required-plaintext}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# a throw-away key, made up here for this recording only
echo "alice:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$T/psk"
chmod 600 "$T/psk"

for which in tls plain; do
  if [ $which = tls ]; then N=$NAME; else N=$NAME2; fi
  PORT=$(free_port)
  timeout 60 nbdkit -f -v --tls=require --tls-psk="$T/psk" -i 127.0.0.1 -p "$PORT" -P "$T/nbdkit.pid" \
    memory 1M 2>"$T/server.log" &
  SRV=$!
  wait_port "$PORT"
  cap_start "$OUT_DIR/$N.pcap" "$PORT"
  if [ $which = tls ]; then
    NBD_TLS=2 NBD_PSK="$T/psk" NBD_USER=alice run_nbdsh "$CAP_DIR/nbdsh-tls.py" "nbd://127.0.0.1:$PORT/" "$T/client"
  else
    NBD_TLS=0 run_nbdsh "$CAP_DIR/nbdsh-tls.py" "nbd://127.0.0.1:$PORT/" "$T/client"
  fi
  cap_stop "$OUT_DIR/$N.pcap"
  stop_pid "$SRV"
  {
    echo "# $N: peer logs (libnbd LIBNBD_DEBUG=1 + our nbdsh script's prints; nbdkit -v)"
    if [ $which = tls ]; then
      echo "# lines prefixed *-in-tls are about the encrypted part and are not checked against the capture"
      trim_libnbd "$T/client.stderr" | sed 's/^libnbd:/libnbd-in-tls:/'
      grep '^script: ' "$T/client.stdout" | sed 's/^script:/script-in-tls:/'
      grep -E '^libnbd: .*(connection is using TLS)' "$T/client.stderr" | sed 's/^libnbd:/libnbd-tls:/' || true
      echo "# $(nbdkit --version)"
      trim_nbdkit "$T/server.log" | grep -E '^nbdkit: [a-z]+\[1\]|newstyle|replying|client|TLS' \
        | awk '/starting TLS handshake/{t=1} { if (t) sub(/^nbdkit:/, "nbdkit-in-tls:"); print }'
    else
      peer_log_libnbd "$T/client"
      grep '^script-note' "$T/client.stdout" || true
      echo "# $(nbdkit --version)"
      trim_nbdkit "$T/server.log" | grep -E '^nbdkit: [a-z]+\[1\]|newstyle|replying|client|TLS' || true
    fi
  } >"$OUT_DIR/$N.peer.log"
  if [ $which = tls ]; then
    cat >"$OUT_DIR/$N.meta.json" <<J
{"name": "$N", "port": $PORT, "tls": true, "checks": ["libnbd-tls", "nbdkit", "tshark-none"],
 "expect": ["option=NBD_OPT_STARTTLS", "reply=NBD_REP_ACK"]}
J
  else
    cat >"$OUT_DIR/$N.meta.json" <<J
{"name": "$N", "port": $PORT, "checks": ["libnbd", "script", "nbdkit"],
 "expect": ["reply=NBD_REP_ERR_TLS_REQD", "option=NBD_OPT_ABORT"]}
J
  fi
  finish "$N" "$PORT"
done
