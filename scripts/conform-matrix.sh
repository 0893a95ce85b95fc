#!/usr/bin/env bash
# The conformance matrix in CI: runs `conform server` against qemu-nbd 10, nbdkit (memory), nbd-server 3.24
# and examples/server.ts (scripts/conform-matrix.ts), and fails when any result differs from the matrix
# committed in docs/conformance.md. Missing peers fail in CI (CI=true) and skip elsewhere.
#   bash scripts/conform-matrix.sh            # check
#   bash scripts/conform-matrix.sh --write    # rewrite the matrix after a deliberate change
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
missing=()
for p in qemu-nbd nbdkit nbd-server; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "conform-matrix: missing peers in CI: ${missing[*]}" >&2
    exit 1
  fi
  echo "conform-matrix: SKIPPED, missing peers: ${missing[*]} (bash ../shared/peers/install-peers.sh)"
  exit 0
fi
mode="--check"
if [ "${1:-}" = "--write" ]; then mode="--write"; fi
# Bounded: every case waits at most 3 s per answer; the whole matrix may not take more than 10 minutes.
timeout --kill-after=30 600 npx vite-node scripts/conform-matrix.ts -- "$mode" docs/conformance.md
# conform client with qemu-img, qemu-io, nbdinfo, nbdcopy and python nbd under every profile.
for p in qemu-img qemu-io nbdinfo nbdcopy; do
  command -v "$p" >/dev/null 2>&1 || { echo "conform-matrix: missing client $p" >&2; [ "${CI:-}" = "true" ] && exit 1; exit 0; }
done
timeout --kill-after=30 900 npx vite-node scripts/conform-clients.ts -- "$mode" docs/conformance.md
