"""The folder format every saved result shares, and the registry of result kinds.

Every result lapelens saves is a folder whose JSON *marker* file (written last, see ``_io``)
records ``kind``, ``schema_version`` and ``lapelens_version`` beside the result's own settings.
The module that defines a result registers its kind here (:func:`register_kind`), with the class
whose ``load(folder)`` reads it; nothing here names a module above it. ``lapelens.load(path)``
(``lapelens.loader``) reads the marker and hands the folder to that class.

A schema version grows when a kind's files change so that an older lapelens would misread them;
such a file is refused with a message saying to upgrade. A file of an older schema is converted on
loading by its kind's reader (``load_folder``'s ``upgrade``), so that results saved by every
earlier lapelens still load.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lapelens._io import atomic_files
from lapelens._version import __version__
from lapelens.errors import LapelensError


@dataclass(frozen=True)
class Kind:
    """One kind of saved result."""

    name: str
    #: The JSON file that marks a folder as holding this kind.
    marker: str
    #: The class that reads it: ``type.load(folder)``.
    type: Any
    #: How to make one, for error messages.
    make: str
    #: Version of the kind's file layout; a file with a larger one is refused, one with a smaller one
    #: converted by the reader. A marker without a version (saved before they had one) is version 1.
    schema: int = 1
    #: Kinds whose files this kind's folder also holds, as part of itself (a sweep holds its matrix).
    contains: tuple[str, ...] = ()
    #: The safetensors file of a kind saved as tensors plus marker (``save_folder``/``load_folder``).
    tensors: str | None = None
    #: Files besides the marker that a folder of this kind always has (a model folder has a
    #: ``config.json`` too; only a run folder has a ``summary.json`` beside it).
    requires: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        return self.type.__name__

    def read(self, folder: Path) -> Any:
        return self.type.load(folder)

    def present(self, folder: Path) -> bool:
        """The folder holds this kind's marker (and the files that mark it as this kind)."""
        return all((folder / f).is_file() for f in (self.marker, *self.requires))


#: Every registered kind, in registration order; filled by :func:`register_kind` as the modules
#: that define results are imported (``lapelens.loader`` imports them all).
KINDS: dict[str, Kind] = {}
#: The kinds an intervention accepts (``LanguageNeurons``, ``ParameterMask``).
SELECTION_KINDS = ("language_neurons", "parameter_mask")


def register_kind(kind: Kind) -> Kind:
    """Declare a kind of saved result (its module does, once, when imported)."""
    taken = [k.name for k in KINDS.values() if k.marker == kind.marker and k.name != kind.name]
    if taken:
        raise LapelensError(f"Result kind {kind.name!r}: its marker {kind.marker} is already {taken[0]!r}'s.")
    KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind (tests register toy results and remove them again)."""
    KINDS.pop(name, None)


def kind(name: str) -> Kind:
    if name not in KINDS:
        raise LapelensError(f"Unknown result kind {name!r}; the kinds are {', '.join(KINDS)}.")
    return KINDS[name]


def stamp(kind_name: str, meta: dict) -> dict:
    """``meta`` with ``kind``, ``schema_version`` and ``lapelens_version`` first (a version already
    in ``meta``, from the result this one was loaded from, is kept)."""
    schema = kind(kind_name).schema
    out = {"kind": kind_name, "schema_version": schema, "lapelens_version": __version__}
    out.update(meta)
    out["kind"], out["schema_version"] = kind_name, schema
    return out


def write_meta(file: Path, kind_name: str, meta: dict) -> None:
    """Write the marker JSON of a result of ``kind_name``."""
    file.write_text(json.dumps(stamp(kind_name, meta), indent=2, ensure_ascii=False, default=str))


def checked(path: Path, meta: dict, kind_name: str) -> dict:
    """``meta`` without ``kind``/``schema_version`` once both fit ``kind_name`` (absent: an older save)."""
    meta = dict(meta)
    found, version = meta.pop("kind", None), meta.pop("schema_version", None)
    if found is not None and found != kind_name:
        raise wrong_kind(path, found, (kind_name,))
    expected = kind(kind_name).schema
    if version is not None and (not isinstance(version, int) or version > expected):
        raise LapelensError(
            f"{path} holds a {kind_name} result of schema version {version} (written by lapelens "
            f"{meta.get('lapelens_version', '?')}); this lapelens {__version__} reads schema {expected} and older: "
            "update your lapelens clone (git pull && pip install -e .), or recompute the result with this version."
        )
    return meta


#: ``upgrade(schema_version, meta, tensors) -> (meta, tensors)``: a folder of an older schema, in the current one.
Upgrade = Callable[[int, dict, dict], tuple[dict, dict]]


def read_meta(path: Path, kind_name: str) -> dict:
    """The checked marker JSON of the result of ``kind_name`` in folder ``path``."""
    return checked(path, _marker(path, kind_name), kind_name)


def _marker(path: Path, kind_name: str) -> dict:
    """The marker JSON of the result of ``kind_name`` in folder ``path``, as written (not checked)."""
    spec = kind(kind_name)
    file = path / spec.marker
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LapelensError(
            f"{file} is corrupt ({type(exc).__name__}: {exc}); make it again with {spec.make}."
        ) from None
    if not isinstance(meta, dict):
        raise LapelensError(f"{file} is corrupt (not a JSON object); make it again with {spec.make}.")
    return meta


def load_tensors(file: Path, kind_name: str) -> dict:
    """``safetensors.torch.load_file``, with one clear error for a truncated or damaged file."""
    from safetensors.torch import load_file  # deferred: safetensors is needed only by tensor kinds

    make = kind(kind_name).make
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise LapelensError(f"{file} is missing; make the {kind_name} result again with {make}.") from None
    except Exception as exc:  # safetensors raises its own error type for every malformed file
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LapelensError(
            f"{file} is corrupt or truncated ({detail}; {file.stat().st_size} bytes): the save was interrupted "
            f"or the copy is incomplete; copy it again or make it again with {make}."
        ) from None


def save_folder(path: str | Path, kind_name: str, tensors: dict, meta: dict) -> Path:
    """Write a result of ``kind_name`` as its folder: one safetensors file and its marker JSON,
    atomically (a stop never leaves new tensors beside old metadata); returns the folder."""
    from safetensors.torch import save_file  # deferred: safetensors is needed only by tensor kinds

    path, spec = Path(path), kind(kind_name)
    with atomic_files(path, spec.marker) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / spec.tensors))
        write_meta(tmp / spec.marker, kind_name, meta)
    return path


def load_folder(path: str | Path, kind_name: str, message: str, upgrade: Upgrade | None = None) -> tuple[dict, dict]:
    """(checked marker JSON, tensors) of a result folder of ``kind_name``; ``message`` is the error
    when ``path`` is not one (a folder of another kind gets the wrong-kind error instead).

    A folder of an older schema version than the kind's goes through ``upgrade`` first, so that the
    caller only ever sees the current layout.
    """
    path, spec = Path(path), kind(kind_name)
    require(path, kind_name, (spec.tensors, spec.marker), message)
    raw = _marker(path, kind_name)
    meta, tensors = checked(path, raw, kind_name), load_tensors(path / spec.tensors, kind_name)
    version = raw.get("schema_version")
    version = 1 if version is None else version
    if version < spec.schema:
        if upgrade is None:  # never read an older layout as the current one
            raise LapelensError(
                f"{path} holds a {kind_name} result of schema version {version}, which this lapelens "
                f"{__version__} cannot convert to schema {spec.schema}: make it again with {spec.make}."
            )
        meta, tensors = upgrade(version, meta, tensors)
    return meta, tensors


def kinds_in(path: Path) -> list[str]:
    """The kinds of the results in folder ``path``, from the markers present (a kind that another
    found kind contains is not listed on its own)."""
    if not path.is_dir():
        return []
    found = [k.name for k in KINDS.values() if k.present(path)]
    inner = {c for k in found for c in KINDS[k].contains}
    return [k for k in found if k not in inner]


def kind_of_marker(file: Path) -> str | None:
    """The kind whose marker ``file`` is (and whose other marking files are beside it), or None."""
    return next((k.name for k in KINDS.values() if k.marker == file.name and k.present(file.parent)), None)


def wrong_kind(path: Path, found: str | Sequence[str], wanted: Iterable[str]) -> LapelensError:
    found = [found] if isinstance(found, str) else list(found)
    wanted = list(wanted)
    what = " and ".join(f"a {k} result ({KINDS[k].type_name})" if k in KINDS else f"a {k!r} result" for k in found)
    want = " or ".join(f"a {k} result ({KINDS[k].type_name}, made by {KINDS[k].make})" for k in wanted)
    return LapelensError(
        f"{path} holds {what}, not {want}: pass the right folder, or read it with lapelens.load({str(path)!r})."
    )


def require(path: Path, kind_name: str, files: Sequence[str], message: str) -> None:
    """Refuse a folder that lacks ``files``: naming the kind it holds instead, if any, else ``message``."""
    if all((path / f).is_file() for f in files):
        return
    other = [k for k in kinds_in(path) if k != kind_name]
    if other:
        raise wrong_kind(path, other, (kind_name,))
    raise LapelensError(message)
