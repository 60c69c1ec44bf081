"""Ctrl-C and SIGTERM end a command cleanly, keeping the work done so far.

:func:`signals_interrupt` (the CLI installs it around every command) turns SIGINT and SIGTERM into
:class:`Interrupted`, a ``KeyboardInterrupt`` that remembers its signal, so SIGTERM unwinds like
Ctrl-C: ``finally`` blocks run, locks are released, checkpoints are written. Inside
:func:`deferred` (one batch of a collection) the exception waits for the end of the block, so the
running sums are never left half-updated; a second signal does not wait.

Whoever saves something on the way out records it on the exception (:func:`note`); the CLI prints
one line from those notes and exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_NOTES = "lapelens_saved"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    depth = 0  # nesting of deferred() blocks in the main thread
    pending: int | None = None  # a signal that arrived inside one


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` while inside (main thread only; elsewhere a
    no-op). The previous handlers are put back on the way out."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        # A Chromium that kaleido drives for PNG/SVG export got the same Ctrl-C (one process group): the
        # reader thread of its driver then logs the broken pipe with a traceback, which is no error here.
        logging.getLogger("choreographer").setLevel(logging.CRITICAL + 1)
        if _State.depth and _State.pending is None:
            _State.pending = signum  # raised when the deferred block ends
            return
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _State.pending = None


@contextmanager
def deferred() -> Iterator[None]:
    """A block that an interrupt caught by :func:`signals_interrupt` does not cut in two: the
    interrupt is raised when the block ends. Without that handler (a plain Python session) a
    Ctrl-C raises where it lands, as usual."""
    if not _main_thread():
        yield
        return
    _State.depth += 1
    try:
        yield
    except BaseException:
        _State.depth -= 1
        if _State.depth == 0:
            _State.pending = None  # the block already ends by an exception
        raise
    _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise Interrupted(signum)


def note(exc: BaseException, saved: str) -> None:
    """Record on an interrupt what was saved before it propagated (``"12,288 tokens saved"``)."""
    notes = getattr(exc, _NOTES, None)
    if notes is None:
        notes = []
        setattr(exc, _NOTES, notes)
    notes.append(saved)


def notes(exc: BaseException) -> list[str]:
    """What :func:`note` recorded on ``exc``, in order."""
    return list(getattr(exc, _NOTES, []))


def exit_code(exc: BaseException) -> int:
    """The shell's code for a process ended by the signal: 128 + its number (Ctrl-C: 130)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def summary(exc: BaseException) -> str:
    """One line for the terminal: what was saved and how to resume, or that nothing was."""
    saved = notes(exc)
    if not saved:
        return "interrupted; nothing was saved"
    return f"interrupted; {', '.join(saved)}, re-run the same command to resume"
