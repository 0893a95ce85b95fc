#!/bin/bash
# libnbd's own tool nbdinfo (1.14) as the client:
#  NAME  (default nbdinfo-list-json-qemu10): `nbdinfo --list --json` against qemu-nbd 10.0
#        (-x disk1 -D description -A): STRUCTURED_REPLY, LIST, then per export INFO with
#        NAME/DESCRIPTION/BLOCK_SIZE and LIST_META_CONTEXT (base:allocation, qemu:allocation-depth),
#        then ABORT (libnbd closes without waiting for the ACK).
#  NAME2 (default nbdinfo-map-nbdkit): `nbdinfo --map` against nbdkit 1.32's data plugin with a
#        sparse layout: SET_META_CONTEXT base:allocation, GO, BLOCK_STATUS (several extents), DISC.
source "$(dirname "$0")/lib.sh"
NAME=${1:-nbdinfo-list-json-qemu10}
NAME2=${2:-nbdinfo-map-nbdkit}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# --- nbdinfo --list --json vs qemu-nbd
truncate -s 1M "$T/disk.img"
printf 'golden' | dd of="$T/disk.img" bs=1 seek=65536 conv=notrunc status=none
PORT=$(free_port)
timeout 60 qemu-nbd -f raw -t --bind 127.0.0.1 -p "$PORT" -A -x disk1 -D golden-capture-disk \
  --trace 'nbd_*' "$T/disk.img" 2>"$T/server.log" &
SRV=$!
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME.pcap" "$PORT"
LIBNBD_DEBUG=1 timeout 30 nbdinfo --list --json "nbd://127.0.0.1:$PORT/" >"$T/client.stdout" 2>"$T/client.stderr"
cap_stop "$OUT_DIR/$NAME.pcap"
stop_pid "$SRV"
{
  echo "# $NAME: peer logs (libnbd LIBNBD_DEBUG=1 from nbdinfo, nbdinfo's JSON output; qemu-nbd --trace 'nbd_*')"
  echo "# $(nbdinfo --version | head -1)"
  trim_libnbd "$T/client.stderr"
  sed 's/^/nbdinfo-stdout: /' "$T/client.stdout"
  echo "# $(qemu-nbd --version | head -1)"
  sed -n 's/^\(nbd_[a-z_]*\) /qemu-nbd: \1 /p' "$T/server.log"
} >"$OUT_DIR/$NAME.peer.log"
cat >"$OUT_DIR/$NAME.meta.json" <<J
{"name": "$NAME", "port": $PORT, "checks": ["libnbd", "qemu-server"],
 "expect": ["option=NBD_OPT_LIST", "info=NBD_INFO_DESCRIPTION", "option=NBD_OPT_LIST_META_CONTEXT", "option=NBD_OPT_ABORT"]}
J
finish "$NAME" "$PORT"

# --- nbdinfo --map vs nbdkit data plugin (data at 0, 64k-68k, 512k; holes elsewhere)
PORT=$(free_port)
timeout 60 nbdkit -f -v -i 127.0.0.1 -p "$PORT" -P "$T/nbdkit.pid" --filter=log data \
  data='1 2 3 4 @65536 "golden" * 512 @524288 0xff * 4096' size=1M logfile="$T/requests.log" 2>"$T/server2.log" &
SRV=$!
wait_port "$PORT"
cap_start "$OUT_DIR/$NAME2.pcap" "$PORT"
LIBNBD_DEBUG=1 timeout 30 nbdinfo --map "nbd://127.0.0.1:$PORT/" >"$T/client2.stdout" 2>"$T/client2.stderr"
cap_stop "$OUT_DIR/$NAME2.pcap"
stop_pid "$SRV"
{
  echo "# $NAME2: peer logs (libnbd LIBNBD_DEBUG=1 from nbdinfo, nbdinfo's map output; nbdkit -v; nbdkit log filter)"
  echo "# $(nbdinfo --version | head -1)"
  trim_libnbd "$T/client2.stderr"
  sed 's/^/nbdinfo-stdout: /' "$T/client2.stdout"
  echo "# $(nbdkit --version)"
  trim_nbdkit "$T/server2.log" | grep -E '^nbdkit: [a-z]+\[1\]|: debug: (log|data): |newstyle|replying|client' || true
  sed 's/^/nbdkit-log: /' "$T/requests.log"
} >"$OUT_DIR/$NAME2.peer.log"
cat >"$OUT_DIR/$NAME2.meta.json" <<J
{"name": "$NAME2", "port": $PORT, "checks": ["libnbd", "nbdkit", "nbdkit-log", "nbdinfo-map", "tshark"],
 "expect": ["chunkType=NBD_REPLY_TYPE_BLOCK_STATUS"]}
J
finish "$NAME2" "$PORT"
