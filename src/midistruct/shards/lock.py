"""One prepare per output folder at a time: the lock file ``<out>.lock`` beside the folder.

The file holds the holder's process id and host (JSON) and, where the OS has ``flock``, an
exclusive lock on it for the whole run. The kernel releases that lock when the holder dies, so a
file left by a killed prepare is taken over with a warning; a live holder makes the next prepare
fail at once with a :class:`~midistruct.shards.reader.ShardError` naming it. Without ``flock``
(Windows) a lock file whose process is gone on this host is taken over; one from another host
must be removed by hand. Use :class:`OutputLock` as a context manager: released in every case.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from midistruct.shards.reader import ShardError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

_TOOL = "midistruct prepare"


class OutputLock:
    """Hold ``<out>.lock`` while preparing ``out``; ``with OutputLock(out): ...``."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out.with_name(f"{self.out.name}.lock")
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            self._fd = self._try_acquire()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, json.dumps({"tool": _TOOL, "pid": os.getpid(), "host": socket.gethostname()}).encode())
        return self

    def __exit__(self, *exc) -> None:
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        finally:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def _try_acquire(self) -> int | None:
        """An open, locked descriptor of the lock file; None when the file changed meanwhile (retry)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ShardError(f"cannot create the lock file {self.path}: {err.strerror}") from None
        try:
            holder = _read_holder(fd, self.path)
            if not _lock(fd, holder):
                raise ShardError(f"{self.out} is being prepared by {_describe(holder)} (lock file {self.path}); "
                                 "wait for it to finish or choose another data.output")
            if not _same_file(fd, self.path):  # its holder finished and removed it between our open and lock
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        if holder:
            print(f"midistruct: taking over {self.path}, left by {_describe(holder)} which no longer holds it",
                  file=sys.stderr)
        return fd


def _lock(fd: int, holder: dict) -> bool:
    """Lock ``fd`` exclusively without waiting; False when another live process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:  # a file system without flock: judge by the recorded process
            pass
    return not holder or (holder.get("host") == socket.gethostname() and not pid_alive(holder.get("pid")))


def _read_holder(fd: int, path: Path) -> dict:
    """The lock file's holder record ({} when empty); a file that is not ours is refused, never overwritten."""
    text = os.read(fd, 4096).decode(errors="replace").strip()
    if not text:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    if not isinstance(holder, dict) or holder.get("tool") != _TOOL:
        raise ShardError(f"{path} exists and is not a midistruct lock file; move it or choose another data.output")
    return holder


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return f"process {holder.get('pid')} on host {holder.get('host')}"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def pid_alive(pid) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts as alive)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # Windows reports an unknown process this way
        return False
    return True
