"""``percpu xdp redirect-cpu`` on a terminal: the rich live view, and Ctrl-\\ toggling the extended rows.

The command runs in a pseudo-terminal that is its controlling terminal (a new
session), so Ctrl-\\ typed into it is turned into SIGQUIT by the terminal's
line discipline, exactly as at a keyboard.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.timeout(120)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _spawn(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 140, 0, 0))

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = dict(os.environ, TERM="xterm-256color", COLUMNS="140", LINES="50")
    env.pop("FORCE_COLOR", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "percpu", *args],
        stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=controlling_tty, close_fds=True,
    )
    os.close(slave)
    return p, master


def _read_until(master: int, p: subprocess.Popen[bytes], buf: bytearray, want: bytes, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while want not in buf and time.monotonic() < end:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                return want in buf
            if not chunk:
                break
            buf += chunk
        elif p.poll() is not None:
            break
    return want in buf


def test_rich_live_view_and_ctrl_backslash_toggle():
    p, master = _spawn("xdp", "redirect-cpu", "--duration", "12", "-i", "0.5")
    buf = bytearray()
    try:
        # The live view (not plain lines): rich's cursor control and the hint line.
        assert _read_until(master, p, buf, b"toggles extended rows", 60), bytes(buf)[-2000:]
        assert b"\x1b[" in buf, "no terminal control sequences: not the rich live view"
        assert _read_until(master, p, buf, b"rx/s", 30)
        time.sleep(1.2)
        before = ANSI.sub("", bytes(buf).decode(errors="replace"))
        assert "kthread total" not in before, "extended rows shown before the toggle"
        start = len(buf)
        os.write(master, b"\x1c")  # Ctrl-\ at the keyboard: the line discipline sends SIGQUIT
        assert _read_until(master, p, buf, b"kthread total", 30), bytes(buf[start:])[-2000:]
        after = ANSI.sub("", bytes(buf[start:]).decode(errors="replace"))
        assert "enqueue to cpu" in after and "kthread total" in after
        # Ctrl-\ again: back to the terse rows (the newest frame has no extended row).
        os.write(master, b"\x1c")
        time.sleep(1.5)
        mark = len(buf)
        assert _read_until(master, p, buf, b"rx/s", 30)
        time.sleep(1.2)
        _read_until(master, p, buf, b"\x00never", 0.5)
        last = ANSI.sub("", bytes(buf[mark:]).decode(errors="replace"))
        frames = [f for f in last.split("toggles extended rows") if "rx/s" in f]
        assert frames and "kthread total" not in frames[-1], last[-2000:]
        # SIGQUIT did not kill it: it runs to --duration and exits 0 (keep reading: a full
        # terminal buffer would block its writes)
        end = time.monotonic() + 90
        while p.poll() is None and time.monotonic() < end:
            _read_until(master, p, buf, b"\x00never", 0.5)
        assert p.wait(timeout=5) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
