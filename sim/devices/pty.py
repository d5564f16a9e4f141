"""Pseudo-terminals that stand in for serial ports.

:class:`PtyPort` opens a pty pair, puts a stable symlink at the path a tool configuration
names (``/tmp/aldctl-sim/gauge``), and hands the emulator the master side as an asyncio
byte stream. A driver opens the symlink like any serial port (pyserial, pyserial-asyncio,
pymodbus); ptys ignore baud rate and parity, so emulators add their own response latency
where timing matters.

:class:`PtyBridge` joins two ptys back to back, for servers that want to open a device path
themselves (a pymodbus RTU server on one end, the driver on the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable
from pathlib import Path


def _raw(fd: int) -> None:
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO  # lflag: no echo of what the driver writes
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class PtyPort:
    """A pty whose slave end is reachable at ``link``; the emulator owns the master."""

    def __init__(self, link: str | Path) -> None:
        self.link = Path(link)
        self.master, self._slave = os.openpty()
        _raw(self.master)
        _raw(self._slave)
        self.slave_name = os.ttyname(self._slave)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(self.slave_name)
        os.set_blocking(self.master, False)
        self._on_data: Callable[[bytes], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def start(self, on_data: Callable[[bytes], None]) -> None:
        """Call ``on_data`` with every chunk the driver writes (inside the running loop)."""
        self._on_data = on_data
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: nobody holds the slave open right now
            return
        if data and self._on_data is not None:
            self._on_data(data)

    def write(self, data: bytes) -> None:
        """Send bytes to the driver (best effort: a full pty buffer drops the rest)."""
        if self.closed:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                return
            except OSError:
                return
            view = view[n:]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self.master)
        with contextlib.suppress(OSError):
            os.close(self.master)
        with contextlib.suppress(OSError):
            os.close(self._slave)
        with contextlib.suppress(FileNotFoundError):
            if self.link.is_symlink() and os.readlink(self.link) == self.slave_name:
                self.link.unlink()


class PtyBridge:
    """Two named ptys whose masters are joined: what one end writes, the other reads."""

    def __init__(self, link_a: str | Path, link_b: str | Path) -> None:
        self.a = PtyPort(link_a)
        self.b = PtyPort(link_b)

    def start(self) -> None:
        self.a.start(self.b.write)
        self.b.start(self.a.write)

    def close(self) -> None:
        self.a.close()
        self.b.close()
