#!/usr/bin/env python3
"""The npm bin (`node dist/start.cjs`) writes standard output and standard error with `writeAll`
(bin/nbd-codec.ts), which waits and retries when the descriptor is a full non-blocking pipe (EAGAIN). Two
runs with one stream on a FIFO that is already full and non-blocking, drained only after half a second:

- standard error: `dissect MISSING` must wait for its error message to be out before it ends the process
  (it ends the process as soon as `dissect` or `stats` is done): the message arrives whole, exit status 2;
- standard output: `dissect` of the bundled sample must write every byte, in order, exactly what it writes
  to an ordinary pipe, and exit 0.

A bin that gave up on EAGAIN, or ended before its writes were out, loses bytes or fails. Python, not Node:
Node's child_process (libuv) makes the child's standard streams blocking, so the child would never see
EAGAIN. Used by scripts/check.sh after the build.
"""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "dist", "start.cjs")


def full_fifo(work: str, name: str) -> tuple[int, int, int]:
    """A FIFO filled until a write would block: (reader, writer, bytes of filler in it)."""
    fifo = os.path.join(work, name)
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    filled = 0
    try:
        while True:
            filled += os.write(writer, b"\0" * 4096)
    except BlockingIOError:
        pass
    return reader, writer, filled


def run_on_full(args: list[str], stream: str, work: str) -> tuple[bool, int, bytes]:
    """Runs the bin with `stream` on a full FIFO: (still running after 0.5 s, exit status, bytes it wrote)."""
    reader, writer, filled = full_fifo(work, stream + ".fifo")
    child = subprocess.Popen(
        ["node", BIN, *args],
        stdin=subprocess.DEVNULL,
        stdout=writer if stream == "stdout" else subprocess.DEVNULL,
        stderr=writer if stream == "stderr" else subprocess.DEVNULL,
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
    os.close(reader)
    if got[:filled] != b"\0" * filled:
        raise AssertionError("the filler was not read back first")
    return waited, code, got[filled:]


def main() -> int:
    work = tempfile.mkdtemp(prefix="nbd-codec-pipes-")
    failed = False

    missing = os.path.join(work, "missing.pcap")
    waited, code, got = run_on_full(["dissect", missing], "stderr", work)
    message = got.decode()
    expected = f"nbd-codec: cannot read {missing}: ENOENT"
    if not waited or code != 2 or not message.startswith(expected):
        print(f"stderr: waited {waited}, exit status {code}, message {message!r}", file=sys.stderr)
        failed = True
    else:
        print(f"a full standard error: the process waited, exit status 2, message whole ({len(message)} bytes)")

    plain = subprocess.run(["node", BIN, "dissect"], stdin=subprocess.DEVNULL, capture_output=True, check=True)
    waited, code, got = run_on_full(["dissect"], "stdout", work)
    if not waited or code != 0 or got != plain.stdout or len(got) == 0:
        print(
            f"stdout: waited {waited}, exit status {code}, {len(got)} bytes against {len(plain.stdout)}"
            f" (equal: {got == plain.stdout})",
            file=sys.stderr,
        )
        failed = True
    else:
        print(f"a full standard output: the process waited, exit status 0, all {len(got)} bytes as on a plain pipe")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
