# Shared helpers for the capture scripts (sourced, not executed).
#
# Every server binds 127.0.0.1 only, on a free port picked here; every step runs
# under `timeout`; servers and tcpdump are stopped by their own PID.
set -euo pipefail

CAP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CAP_DIR/../.." && pwd)"
OUT_DIR="${OUT_DIR:-$REPO_ROOT/vectors/captures}"
# nbdsh runs `python3` from PATH: /usr/bin first so the Debian python with the nbd module is used.
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
mkdir -p "$OUT_DIR"

log() { printf '[capture] %s\n' "$*" >&2; }

# free_port: print a TCP port that is free on 127.0.0.1 right now.
free_port() {
  /usr/bin/python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# wait_port PORT: wait (max 10 s) until something listens on 127.0.0.1:PORT.  Uses `ss`, so no
# probe connection ever reaches the server (it would show up in the server's log).
wait_port() {
  local port=$1 i
  for i in $(seq 1 100); do
    if ss -Hltn "sport = :$port" | grep -q .; then
      return 0
    fi
    sleep 0.1
  done
  log "nothing listening on 127.0.0.1:$port"; return 1
}

# stop_pid PID: SIGTERM, then SIGKILL after 5 s; never a broad kill.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# cap_start FILE PORT [extra tcpdump args]: start tcpdump on lo for that port; sets TCPDUMP_PID.
cap_start() {
  local file=$1 port=$2; shift 2
  rm -f "$file"
  # TCPDUMP_EXTRA: extra tcpdump options from the caller's environment, e.g. --time-stamp-precision=nano
  # shellcheck disable=SC2086
  timeout 120 tcpdump -i lo --immediate-mode -B 131072 -U ${TCPDUMP_EXTRA:-} "$@" -w "$file" "tcp port $port" \
    2>"$file.tcpdump.log" &
  TCPDUMP_PID=$!
  local i
  for i in $(seq 1 50); do
    grep -q 'listening on' "$file.tcpdump.log" 2>/dev/null && break
    sleep 0.1
  done
  sleep 1
}

# cap_stop FILE: let the last packets land, then stop tcpdump with SIGINT by PID.
cap_stop() {
  local file=$1 i
  sleep 1
  kill -INT "$TCPDUMP_PID" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$TCPDUMP_PID" 2>/dev/null || break
    sleep 0.1
  done
  wait "$TCPDUMP_PID" 2>/dev/null || true
  grep -E 'packets (captured|dropped by kernel)' "$file.tcpdump.log" >&2 || true
  if grep -Eq '^[1-9][0-9]* packets dropped by kernel' "$file.tcpdump.log"; then
    log "tcpdump dropped packets for $file"; return 1
  fi
  rm -f "$file.tcpdump.log"
}

# finish NAME PORT: extract both byte streams and walk them (expected list + log agreement).
finish() {
  local name=$1 port=$2
  /usr/bin/python3 "$CAP_DIR/streams.py" "$OUT_DIR/$name.pcap" "$port" "$OUT_DIR/$name"
  /usr/bin/python3 "$CAP_DIR/walk.py" "$name" "$OUT_DIR"
}

# trim_libnbd FILE PREFIX: libnbd LIBNBD_DEBUG=1 output -> one line per record, no state transitions,
# buffers replaced by their length.
trim_libnbd() { /usr/bin/python3 "$CAP_DIR/trimlog.py" libnbd "$1" "${2:-}"; }
# trim_nbdkit FILE: nbdkit -v output -> protocol lines only.
trim_nbdkit() { /usr/bin/python3 "$CAP_DIR/trimlog.py" nbdkit "$1" ""; }

# run_nbdsh SCRIPT.py URI OUTPREFIX [timeout]: run one of our nbdsh scripts with libnbd debug on.
# The script gets the URI in $NBD_URI; it prints 'script: event=...' lines on stdout.
run_nbdsh() {
  local script=$1 uri=$2 out=$3 t=${4:-30}
  NBD_URI="$uri" LIBNBD_DEBUG=1 timeout "$t" /usr/bin/nbdsh -c "exec(open('$script').read())" \
    >"$out.stdout" 2>"$out.stderr" || { log "nbdsh $script failed: $(tail -3 "$out.stderr")"; return 1; }
}

# peer_log_libnbd OUTPREFIX: libnbd debug + script lines, trimmed, to stdout.
peer_log_libnbd() {
  echo "# libnbd: $(/usr/bin/nbdsh --version 2>/dev/null | head -1)"
  trim_libnbd "$1.stderr"
  grep '^script: ' "$1.stdout" || true
}
