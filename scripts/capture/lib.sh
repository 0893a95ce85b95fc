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

# wait_port PORT: wait (max 10 s) until something listens on 127.0.0.1:PORT.
wait_port() {
  local port=$1 i
  for i in $(seq 1 100); do
    if /usr/bin/python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "nothing listening on 127.0.0.1:$port"; return 1
}

# A probe connection made by wait_port would show up in the capture, so callers
# start the server first, wait_port, and only then start tcpdump.

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
  timeout 120 tcpdump -i lo --immediate-mode -B 131072 -U "$@" -w "$file" "tcp port $port" \
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
