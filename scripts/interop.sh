#!/usr/bin/env bash
# Interop tests: real NBD peers (qemu 10, nbdkit, libnbd, nbd-server) against our example server and
# client, each conversation captured with tcpdump. `npm run test:interop` runs this; `npm test` never does.
# Last (test/interop/vitest.config.ts orders it so), test/interop/dissect-captures.test.ts dissects every
# capture with our conversation decoder: a finding not on its allowlist, undecodable bytes or a capture
# without NBD frames fail the run, and in CI so do missing captures.
#
# In CI (CI=true) a missing peer is a failure. Elsewhere, without peers, the suites are skipped and this
# script says so (install them with `bash ../shared/peers/install-peers.sh`).
#
# Environment: NBD_INTEROP_DIR (default: a new temp dir) receives captures/*.pcap (kept) and work/
# (images, removed after the run);
# NBD_INTEROP_HIDE (see below) is for testing this script.
set -euo pipefail
cd "$(dirname "$0")/.."
export NPM_CONFIG_LOGLEVEL=error
# nbdsh and our Python scripts need Debian's python3 (it has the `nbd` module): /usr/bin first.
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"

peers=(qemu-nbd qemu-img qemu-io nbdkit nbdinfo nbdsh nbdcopy nbd-server tcpdump)
missing=()
# NBD_INTEROP_HIDE=a,b pretends peers a and b are missing (to check the skip and CI-failure paths).
hidden=",${NBD_INTEROP_HIDE:-},"
for p in "${peers[@]}"; do
  if [[ "$hidden" == *",$p,"* ]] || ! command -v "$p" >/dev/null 2>&1; then missing+=("$p"); fi
done
/usr/bin/python3 -c 'import nbd' >/dev/null 2>&1 || missing+=("python3-nbd (python3-libnbd)")

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "interop: missing peers in CI: ${missing[*]}" >&2
    echo "interop: install them with: bash ../shared/peers/install-peers.sh" >&2
  else
    echo "interop: SKIPPING suites that need: ${missing[*]}"
    echo "interop: to run everything: bash ../shared/peers/install-peers.sh && npm run test:interop"
  fi
fi
if [ "$(id -u)" != "0" ] && ! tcpdump -D >/dev/null 2>&1; then
  echo "interop: tcpdump cannot capture here (needs root or CAP_NET_RAW)" >&2
fi

export NBD_INTEROP_DIR="${NBD_INTEROP_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/nbd-interop-XXXXXX")}"
mkdir -p "$NBD_INTEROP_DIR/captures"
echo "interop: captures (pcap) in $NBD_INTEROP_DIR/captures"

# Bounded: the whole run may not take more than 15 minutes. Images are scratch (work/), captures stay.
rc=0
timeout --kill-after=30 900 npx vitest run --config test/interop/vitest.config.ts "$@" || rc=$?
rm -rf "$NBD_INTEROP_DIR/work"
exit "$rc"
