"""One writer per output folder: a lock file, held for as long as the command runs.

``OUT/.lapelens.lock`` (for a file output ``F``: ``.F.lapelens.lock`` beside it) records who
holds it: pid, host, command line, start time, and the torchrun job. Holding it means holding an
exclusive ``flock`` on it, which the kernel drops when the process ends in any way (even
``kill -9``): a lock file whose ``flock`` is free belongs to a process that no longer exists, and
is taken over (with a note). That makes takeover race-free: two processes can never both hold the
``flock``, and after taking it a process checks that the name still points to the file it locked
(the previous holder removes the file on release, so a new file may have replaced it).

Ranks of one torchrun job share one lock: rank 0 takes it; the other ranks wait for a lock of
their own job (same ``job`` key) and never take or release it. A folder inside a locked folder is
locked too: a writer checks every folder above its output. Readers take no lock.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from lapelens.constants import LOCK_FILE
from lapelens.errors import LapelensError

try:
    import fcntl
except ImportError:  # not POSIX: no locking (a note says so)
    fcntl = None  # type: ignore[assignment]

#: ``field(metadata=OUTPUT)`` marks a config field as an output folder, locked while the command runs;
#: ``OUTPUT_FILE`` an output file. ``"file_suffixes"`` beside ``OUTPUT``: a value with one of these
#: suffixes is a file (``identify --out x.pth``); ``"output_default"``: ``args -> path`` when it is None.
OUTPUT = MappingProxyType({"output": "folder"})
OUTPUT_FILE = MappingProxyType({"output": "file"})

#: How long a rank > 0 waits for rank 0's lock, and how long a refused writer re-checks a holder
#: that has just started (its record is written right after its flock is taken).
RANK_WAIT_SECONDS = 120.0
_SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: the record in the lock file."""

    pid: int
    host: str
    command: str
    argv: list = field(default_factory=list)
    started: float = 0.0
    job: str | None = None

    def describe(self) -> str:
        """``lapelens reproduce, pid 1234, started 12:03:55`` (the host when it is another one)."""
        when = datetime.fromtimestamp(self.started)
        stamp = (
            when.strftime("%H:%M:%S") if when.date() == datetime.now().date() else when.strftime("%Y-%m-%d %H:%M:%S")
        )
        host = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"{self.command}, pid {self.pid}{host}, started {stamp}"

    def alive(self) -> bool:
        """Whether the process still exists (assumed so when it runs on another host)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process
            return True
        return True


def lock_path(path: str | os.PathLike, folder: bool = True) -> Path:
    """Where the lock of output ``path`` lives: inside a folder, beside a file."""
    path = Path(path)
    return path / LOCK_FILE if folder else path.parent / f".{path.name}{LOCK_FILE}"


def _read(file: Path) -> Holder | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return Holder(**{k: data[k] for k in ("pid", "host", "command", "argv", "started", "job") if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _held(file: Path) -> bool:
    """Whether some process holds the flock of ``file`` (False when there is no such file)."""
    try:
        fd = os.open(file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


class OutputLock:
    """The lock of one output (``path``; ``folder`` False for a file), given on the command line as
    ``flag``. ``with OutputLock(...):`` takes it (refusing with a :class:`LapelensError` naming the
    holder) and releases it however the block ends."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        command: str,
        folder: bool = True,
        flag: str = "--out",
        argv: Sequence[str] = (),
        job: str | None = None,
        rank: int = 0,
        note: Callable[[str], None] = _stderr,
    ):
        self.path, self.folder, self.flag = Path(path), folder, flag
        self.file = lock_path(self.path, folder)
        self.me = Holder(os.getpid(), socket.gethostname(), command, list(argv), time.time(), job)
        self.rank, self.note = rank, note
        self._fd: int | None = None
        self._made: list[Path] = []  # folders this lock created (removed on release if left empty)

    # ---- refusing -------------------------------------------------------------------------
    def _busy(self, where: Path, holder: Holder | None) -> LapelensError:
        who = holder.describe() if holder is not None else "another lapelens process"
        return LapelensError(f"{where} is in use by {who}; wait for it or choose another {self.flag}")

    def _mine(self, holder: Holder | None) -> bool:
        if holder is None:
            return False
        if self.me.job is not None and holder.job == self.me.job:
            return True
        return holder.pid == self.me.pid and holder.host == self.me.host

    def _check_above(self) -> None:
        """Refuse when a folder above the output is locked by another writer."""
        for folder in Path(os.path.abspath(self.path)).parents:
            file = folder / LOCK_FILE
            if file.is_file() and _held(file):
                holder = _read(file)
                if not self._mine(holder):
                    raise self._busy(folder, holder)

    # ---- taking and releasing -------------------------------------------------------------
    def acquire(self) -> "OutputLock":
        if fcntl is None:
            self.note(f"note: cannot lock {self.path} on this system; make sure no other lapelens writes into it.")
            return self
        self._check_above()
        if self.rank != 0:
            return self._join()
        if self.folder and self.path.exists() and not self.path.is_dir():
            raise LapelensError(f"{self.flag} {self.path} is a file, not a folder: choose another {self.flag}.")
        deadline = time.monotonic() + _SETTLE_SECONDS
        while True:
            try:
                if not self.file.parent.is_dir():
                    self._make_folders(self.file.parent)
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise LapelensError(
                    f"cannot write into {self.file.parent} ({exc.strerror}): choose another {self.flag}."
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _read(self.file)
                # A holder that is gone still had the flock a moment ago: one that was just ending,
                # or a check of another writer; look again shortly before refusing.
                if (holder is None or not holder.alive()) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise self._busy(self.path, holder) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    self.note(
                        f"note: the file system of {self.path} cannot lock files ({exc.strerror}); "
                        "make sure no other lapelens writes into it."
                    )
                    return self
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.file))
            except FileNotFoundError:
                same = False
            if not same:  # the holder we waited for removed this file: lock the new one
                os.close(fd)
                continue
            break
        previous = _read(self.file)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(self.me)).encode(), 0)
        self._fd = fd
        if previous is not None:
            self.note(
                f"note: took over the lock of {self.path} from {previous.describe()}, which is no longer running."
            )
        return self

    def _join(self) -> "OutputLock":
        """A rank > 0: wait until rank 0 of this job holds the lock (refuse if another writer does)."""
        deadline = time.monotonic() + RANK_WAIT_SECONDS
        while time.monotonic() < deadline:
            holder = _read(self.file)
            if holder is not None and _held(self.file):
                if self._mine(holder):
                    return self
                if holder.job is None or holder.job != self.me.job:
                    raise self._busy(self.path, holder)
            time.sleep(0.1)
        raise LapelensError(
            f"rank {self.rank}: rank 0 of this job did not lock {self.path} within "
            f"{RANK_WAIT_SECONDS:.0f} s; see rank 0's error."
        )

    def _make_folders(self, folder: Path) -> None:
        missing = [folder, *(p for p in folder.parents if not p.exists())]
        folder.mkdir(parents=True, exist_ok=True)
        self._made = sorted({p for p in missing if p.is_dir()}, key=lambda p: len(p.parts), reverse=True)

    def release(self) -> None:
        if self._fd is None:
            return
        try:  # unlinked while still held: a writer waiting on this file then locks a new one
            self.file.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        for folder in self._made:  # a command that stopped before writing leaves nothing behind
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
