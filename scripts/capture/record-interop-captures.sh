#!/bin/bash
# Conversations of the interop suite (test/interop/) that the other captures do not show, with OUR example
# server or OUR example client on one side and a real peer on the other.  Our example code is built on
# the codec under test, so every expected list here is checked against the *peer's* log only (qemu
# --trace 'nbd_*'), plus walk.py's spec-layout walk; our side's output is kept in $T and never used.
#  NAME  (default qemu10-img-convert-ours-ext): `qemu-img convert -n -m 4 -W` (qemu 10 client) of a
#        sparse 8 MiB raw image INTO our server (examples/server.ts on Deno), extended headers: up to four
#        requests in flight (cookies 1-4, reused), extended WRITEs without NBD_CMD_FLAG_PAYLOAD_LEN (quirk
#        1), WRITE_ZEROES without flags, our server's NONE chunks; checked against qemu-img's trace.
#  NAME2 (default qemu10-io-ours-ext-hole): qemu-io (qemu 10) against our server, extended headers: a READ
#        over data and a hole answered by OFFSET_DATA + OFFSET_HOLE chunks (extended), write-zeroes,
#        discard, flush, and `map` -> BLOCK_STATUS_EXT from our server (data / hole|zero); checked
#        against qemu-io's trace.
#  NAME3 (default ours-client-qemu10-bs-payload): our example client (scripts/capture/interop-client-ext.ts)
#        against qemu-nbd 10 (-A -B b0): three contexts (base:allocation, qemu:allocation-depth,
#        qemu:dirty-bitmap:b0), WRITE *with* NBD_CMD_FLAG_PAYLOAD_LEN, BLOCK_STATUS over all contexts
#        (three BLOCK_STATUS_EXT chunks) and in the payload form (PAYLOAD_LEN, the bitmap's id only);
#        checked against qemu-nbd's trace.
source "$(dirname "$0")/lib.sh"
NAME=${1:-qemu10-img-convert-ours-ext}
NAME2=${2:-qemu10-io-ours-ext-hole}
NAME3=${3:-ours-client-qemu10-bs-payload}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$REPO_ROOT"
# `npx deno` runs this binary; started directly, its PID is the one we stop.
DENO="$REPO_ROOT/node_modules/.bin/deno"
[ -x "$DENO" ] || { log "no $DENO (run npm ci)"; exit 1; }
MiB=1048576

# start_ours LOGPREFIX ARGS...: our example server on 127.0.0.1, port 0; sets SRV (PID) and PORT.
start_ours() {
  local out=$1 i; shift
  timeout 120 "$DENO" run -A examples/server.ts --port 0 "$@" >"$out.stdout" 2>"$out.stderr" &
  SRV=$!
  PORT=
  for i in $(seq 1 600); do
    PORT=$(sed -n 's/.*listening 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out.stdout" | head -1)
    [ -n "$PORT" ] && break
    kill -0 "$SRV" 2>/dev/null || { log "our server exited: $(tail -3 "$out.stderr")"; return 1; }
    sleep 0.1
  done
  [ -n "$PORT" ] || { log "our server did not start"; stop_pid "$SRV"; return 1; }
  wait_port "$PORT"
}

# qemu_client_log PREFIX FILE: qemu --trace 'nbd_*' lines of a qemu client, prefixed.
qemu_client_log() { sed -n "s/^\(nbd_[a-z_]*\) /$1: \1 /p" "$2"; }

# --- 1. qemu-img convert into our server (extended headers), 4 coroutines, out-of-order writes allowed
# (-m 4 -W): an 8 MiB sparse image with 64 KiB of data in each 2 MiB chunk, so writes are in flight at once
truncate -s $((8 * MiB)) "$T/src.img"
for k in 0 33 66 127; do  # 64 KiB blocks 0, 33, 66, 127: one in each 2 MiB chunk
  head -c 65536 /dev/urandom | dd of="$T/src.img" bs=65536 seek=$k conv=notrunc status=none
done
start_ours "$T/ours1" --size $((8 * MiB))
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
timeout 60 qemu-img --trace 'nbd_*' convert -n -m 4 -W -f raw -O raw "$T/src.img" "nbd://127.0.0.1:$PORT/disk" \
  >"$T/client1.out" 2>"$T/client1.log"
cap_stop "$OUT_DIR/$NAME.pcap"
# the image really arrived: read it back through qemu-img, outside the capture
timeout 60 qemu-img convert -f raw -O raw "nbd://127.0.0.1:$PORT/disk" "$T/back.img"
stop_pid "$SRV"
cmp "$T/src.img" "$T/back.img" || { log "$NAME: the image read back differs"; exit 1; }
{
  echo "# $NAME: peer log (qemu-img --trace 'nbd_*'), trimmed to protocol events; the server is ours (not a peer)"
  echo "# qemu-img: $(qemu-img --version | head -1)"
  qemu_client_log qemu-img "$T/client1.log"
  sed 's/^/qemu-img-stdout: /' "$T/client1.out"
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["qemu-client"],
 "expect": ["option=NBD_OPT_EXTENDED_HEADERS", "command=NBD_CMD_WRITE", "chunkType=NBD_REPLY_TYPE_NONE"]}
J
finish "$NAME" "$PORT"

# --- 2. qemu-io against our server (extended headers): OFFSET_DATA + OFFSET_HOLE, BLOCK_STATUS_EXT
start_ours "$T/ours2" --size $MiB
cap_start "$OUT_DIR/$NAME2.pcap" "$PORT"
timeout 30 qemu-io --trace 'nbd_*' -f raw "nbd://127.0.0.1:$PORT/disk" \
  -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' -c 'read 32k 128k' -c 'write -z 256k 64k' \
  -c 'discard 0 4k' -c 'flush' -c 'map' >"$T/client2.out" 2>"$T/client2.log"
cap_stop "$OUT_DIR/$NAME2.pcap"
stop_pid "$SRV"
{
  echo "# $NAME2: peer log (qemu-io --trace 'nbd_*'), trimmed to protocol events; the server is ours (not a peer)"
  echo "# qemu-io: $(qemu-io --version | head -1)"
  qemu_client_log qemu-io "$T/client2.log"
  sed 's/^/qemu-io-stdout: /' "$T/client2.out"
} >"$OUT_DIR/$NAME2.peer.log"
cat >"$OUT_DIR/$NAME2.meta.json" <<J
{"name": "$NAME2", "port": $PORT, "checks": ["qemu-client"],
 "expect": ["chunkType=NBD_REPLY_TYPE_OFFSET_HOLE", "chunkType=NBD_REPLY_TYPE_OFFSET_DATA", "chunkType=NBD_REPLY_TYPE_BLOCK_STATUS_EXT", "option=NBD_OPT_EXTENDED_HEADERS"]}
J
finish "$NAME2" "$PORT"

# --- 3. our client against qemu-nbd (-A -B b0): block-status payload form
timeout 30 qemu-img create -q -f qcow2 "$T/disk.qcow2" 4M
timeout 30 qemu-img bitmap --add "$T/disk.qcow2" b0
PORT=$(free_port)
timeout 60 qemu-nbd -f qcow2 -t --bind 127.0.0.1 -p "$PORT" -x disk -A -B b0 --trace 'nbd_*' "$T/disk.qcow2" \
  2>"$T/server3.log" &
SRV=$!
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME3.pcap" "$PORT"
timeout 60 "$DENO" run -A scripts/capture/interop-client-ext.ts "$PORT" >"$T/client3.out" 2>"$T/client3.err" \
  || { log "our client failed: $(tail -5 "$T/client3.err")"; exit 1; }
cap_stop "$OUT_DIR/$NAME3.pcap"
stop_pid "$SRV"
grep -q 'read-back ok=true' "$T/client3.out" || { log "$NAME3: read-back failed"; exit 1; }
{
  echo "# $NAME3: peer log (qemu-nbd --trace 'nbd_*'), trimmed to protocol events; the client is ours (not a peer)"
  echo "# qemu-nbd: $(qemu-nbd --version | head -1)"
  sed -n 's/^\(nbd_[a-z_]*\) /qemu-nbd: \1 /p' "$T/server3.log" | sed 's/data = 0x[0-9a-f]*, //'
} >"$OUT_DIR/$NAME3.peer.log"
cat >"$OUT_DIR/$NAME3.meta.json" <<J
{"name": "$NAME3", "port": $PORT, "checks": ["qemu-server"],
 "expect": ["flags=NBD_CMD_FLAG_PAYLOAD_LEN", "chunkType=NBD_REPLY_TYPE_BLOCK_STATUS_EXT", "context=qemu:dirty-bitmap:b0", "option=NBD_OPT_EXTENDED_HEADERS"]}
J
finish "$NAME3" "$PORT"
