#!/bin/bash
# Re-record every capture in vectors/captures/ (installs nothing).
#   bash scripts/capture/record-all.sh        (from the repo root; needs root for tcpdump on lo)
# Checks the peers first with ../shared/peers/install-peers.sh --check (relative to the repo root)
# and exits non-zero if one is missing.  Each record-*.sh starts its server(s) on 127.0.0.1 on a
# free port, captures with tcpdump, stops everything by PID, extracts the byte streams
# (streams.py) and writes/checks the expected frame list (walk.py); any disagreement between the
# spec walk, the peer logs and tshark stops the run.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
if ! bash ../shared/peers/install-peers.sh --check; then
  echo "record-all: a peer is missing (see ../shared/peers/install-peers.sh)" >&2
  exit 1
fi
for tool in tcpdump tshark qemu-nbd qemu-io nbdkit nbdsh nbdinfo nbd-server ss timeout; do
  command -v "$tool" >/dev/null || PATH=/usr/sbin:/usr/bin:$PATH command -v "$tool" >/dev/null \
    || { echo "record-all: $tool not found" >&2; exit 1; }
done
# record-interop-captures.sh runs our example server and client on the devDependency Deno (npm ci)
[ -x node_modules/.bin/deno ] || { echo "record-all: node_modules/.bin/deno not found (run npm ci)" >&2; exit 1; }
OUT="$ROOT/vectors/captures"
mkdir -p "$OUT"
# only the kinds of files these scripts write (README.md stays)
find "$OUT" -maxdepth 1 -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.bin' -o -name '*.expected.jsonl' \
  -o -name '*.peer.log' -o -name '*.meta.json' \) -delete
for s in record-qemu-ext.sh record-qemu-img-map.sh record-libnbd-nbdkit-sr.sh record-libnbd-qemu-sr.sh record-libnbd-nbdkit-simple.sh \
         record-nbd-server.sh record-nbdkit-oldstyle.sh record-nbdkit-exportname.sh record-qemu-fallback.sh record-nbdinfo.sh \
         record-nbdkit-tls.sh record-nbdkit-ooo.sh record-formats.sh record-interop-captures.sh; do
  echo "=== $s" >&2
  bash "$HERE/$s"
done
/usr/bin/python3 "$HERE/summary.py" "$OUT" --update "$OUT/README.md"
