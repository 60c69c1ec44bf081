"""Atomic writes: a saved result is either all old, all new, or clearly absent; never a mix.

Every lapelens artifact is a folder of a few files whose JSON metadata file is read first (its
*marker*). ``atomic_files(folder, marker)`` yields a staging folder inside ``folder``; the caller
writes every file there. On success the old marker is removed first, the other files are moved
into place with ``os.replace`` (atomic per file), and the new marker is moved last. A stop at any
point therefore leaves either the old result, a folder without a marker (which ``load`` refuses
with a clear message), or the new result: never new tensors beside old metadata.

Saved files get the mode a plain ``open`` would give them (``0666`` less the umask; folders
``0777`` less the umask): ``mkdtemp`` makes its folder 0700, safetensors writes its files 0600,
and ``os.replace`` keeps whatever mode the staged file had, so without :func:`respect_umask`
other users of a shared results folder could not read them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it, at once back
    os.umask(mask)
    return mask


def respect_umask(path: str | os.PathLike) -> None:
    """Give ``path`` and everything under it the modes ``open``/``mkdir`` give under the umask."""
    mask = current_umask()
    path = Path(path)
    todo = [path]
    while todo:
        item = todo.pop()
        if item.is_symlink():
            continue
        if item.is_dir():
            os.chmod(item, 0o777 & ~mask)
            todo.extend(item.iterdir())
        elif item.exists():
            os.chmod(item, 0o666 & ~mask)


@contextmanager
def atomic_files(folder: str | os.PathLike, marker: str, drop: Iterable[str] = ()) -> Iterator[Path]:
    """Stage the files of one artifact, then commit them into ``folder`` with ``marker`` last.

    ``drop``: files of an earlier save of this artifact that the new one does not have (removed
    after the old marker, so they never pair with the new one).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{marker}.", suffix=".partial", dir=folder))
    try:
        yield stage
        if not (stage / marker).is_file():
            raise RuntimeError(f"atomic_files: {marker} was not written")  # a bug in the caller
        (folder / marker).unlink(missing_ok=True)
        for name in drop:
            if not (stage / name).exists():
                (folder / name).unlink(missing_ok=True)
        respect_umask(stage)
        for item in sorted(stage.iterdir()):
            if item.name != marker:
                target = folder / item.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(item, target)
        os.replace(stage / marker, folder / marker)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file keeps the final name, inside a temporary folder: some writers record the
    # file name in the file (torch.save names its zip records after it).
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    tmp = stage / path.name
    try:
        yield tmp
        respect_umask(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write one UTF-8 text file atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
