#!/usr/bin/env python3
"""The npm bin ends its process as soon as `dissect` or `stats` is done (bin/nbd-codec.ts), unless a write to
standard error is still waiting: this runs `node dist/start.cjs dissect MISSING` with standard error on a
FIFO that is full and non-blocking, so the error message cannot be written at once, then drains the FIFO
after half a second. The message must arrive whole and the exit status be 2; a process that ended without
waiting loses the message.

Python, not Node: Node's child_process (libuv) makes the child's standard streams blocking, so the child
would never see EAGAIN. Used by scripts/check.sh after the build.
"""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    work = tempfile.mkdtemp(prefix="nbd-codec-stderr-")
    fifo = os.path.join(work, "stderr.fifo")
    missing = os.path.join(work, "missing.pcap")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    filler = b"\0" * 4096
    try:
        while True:
            os.write(writer, filler)
    except BlockingIOError:
        pass
    child = subprocess.Popen(
        ["node", os.path.join(ROOT, "dist", "start.cjs"), "dissect", missing],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=writer,
    )
    os.close(writer)
    time.sleep(0.5)
    waited = child.poll() is None
    got = b""
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            chunk = os.read(reader, 65536)
        except BlockingIOError:
            if child.poll() is not None:
                break
            time.sleep(0.005)
            continue
        if not chunk:
            break
        got += chunk
    code = child.wait()
    message = got.replace(b"\0", b"").decode()
    expected = f"nbd-codec: cannot read {missing}: ENOENT"
    if not waited or code != 2 or not message.startswith(expected):
        print(f"waited for standard error: {waited}, exit status {code}, message {message!r}", file=sys.stderr)
        return 1
    print(f"a full standard error: the process waited, exit status 2, message whole ({len(message)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
