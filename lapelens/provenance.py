"""What a result was computed from: short, stable identities of models, corpora and settings.

A pipeline stage records the identity of its inputs beside its output and is reused only while
they are unchanged. Local files are identified by name, size and (up to 64 MB) their content
hash; larger files by size and modification time, so that identifying a 1 GB checkpoint costs
nothing and touching it only causes a recomputation, never a stale result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lapelens.corpus as c
from lapelens.constants import EMBEDDED
from lapelens.models import embedded_model_dir

_HASHED_BYTES = 64 * 2**20


def digest(value: Any) -> str:
    """A 16-hex-digit hash of a JSON-able value (keys sorted, so dict order does not matter)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_identity(files: Iterable[Path]) -> str:
    entries = []
    for f in sorted(files):
        stat = f.stat()
        if stat.st_size <= _HASHED_BYTES:
            entries.append([f.name, stat.st_size, hashlib.sha256(f.read_bytes()).hexdigest()])
        else:
            entries.append([f.name, stat.st_size, stat.st_mtime_ns])
    return digest(entries)


def model_identity(name: str) -> dict:
    """``{"model": name, "files": hash}``; for a hub name only the name (the hub versions it)."""
    folder = embedded_model_dir() if name == EMBEDDED else Path(name).expanduser()
    if not folder.is_dir():
        return {"model": name}
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix != ".md" and f.name != "train_log.jsonl"]
    return {"model": name, "files": files_identity(files)}


def corpus_identity(name: str, split: str, languages: Sequence[str]) -> dict:
    """Identity of the text ``load_corpus(name, split, languages)`` reads."""
    out: dict[str, Any] = {"corpus": name, "split": split}
    if name == EMBEDDED:
        out["files"] = files_identity([c.CORPUS_DIR / "mono" / f"{lang}.{split}.jsonl.xz" for lang in languages])
    elif name == c.WIKIPEDIA:
        out["dump"] = c.WIKIPEDIA_DUMP
    elif Path(name).is_dir():
        found = c._folder_files(Path(name), split)
        out["files"] = files_identity([found[lang] for lang in languages if lang in found])
    return out


def parallel_identity(name: str, split: str) -> dict:
    """Identity of a parallel corpus (the embedded one is built from both mono splits)."""
    if name == EMBEDDED:
        return {"parallel": name, "split": split, "files": files_identity((c.CORPUS_DIR / "mono").glob("*.jsonl.xz"))}
    return {"parallel": name, "split": split}
