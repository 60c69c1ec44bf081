"""``Result``: the base of the experiments' results, which are tables plus metadata in a folder.

A subclass declares its kind once (``kind``, ``marker``, ``make``; registered with
``lapelens.artifacts`` when the class is defined, so ``lapelens.load`` reads it), says what it
writes (:meth:`Result._write`, by default the CSVs of :meth:`Result._tables`) and records
(:meth:`Result._meta`), and how it is rebuilt (:meth:`Result._read`). ``save`` and ``load`` are
written once, here: the atomic folder (the marker last, files of an earlier save that this one
lacks removed), the checks of kind and schema version, and one clear error for a corrupt file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pandas as pd

from lapelens._io import atomic_files
from lapelens.artifacts import Kind, read_meta, register_kind, require, write_meta
from lapelens.errors import LapelensError

R = TypeVar("R", bound="Result")


class Result:
    """A saved experiment result: one folder of tables (CSV) and a marker JSON."""

    #: The kind's name (``lapelens.load(path, kind)``), its marker file and how to make one (errors).
    kind: ClassVar[str]
    marker: ClassVar[str]
    make: ClassVar[str]
    schema: ClassVar[int] = 1
    #: Kinds saved inside this one's folder as part of it (a sweep holds its perturbation matrix).
    contains: ClassVar[tuple[str, ...]] = ()
    #: Files besides the marker that ``load`` needs; and every file a save may write (a file
    #: an earlier save wrote and this one does not is removed).
    required: ClassVar[tuple[str, ...]] = ()
    files: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in vars(cls):
            register_kind(Kind(cls.kind, cls.marker, cls, cls.make, cls.schema, cls.contains))

    # ---- what a subclass says -------------------------------------------------------------------
    def _tables(self) -> Mapping[str, tuple[pd.DataFrame | None, dict]]:
        """``{file name: (table or None, DataFrame.to_csv options)}``: the CSVs :meth:`_write` writes."""
        return {}

    def _write(self, tmp: Path) -> None:
        """Write every file but the marker into ``tmp`` (the staging folder of an atomic save)."""
        for name, (table, options) in self._tables().items():
            if table is not None:
                table.to_csv(tmp / name, **options)

    def _meta(self) -> dict:
        """What the marker JSON records besides kind and versions."""
        return dict(getattr(self, "meta", {}))

    @classmethod
    def _read(cls: type[R], folder: Path, meta: dict) -> R:
        """The result from its folder and its checked marker JSON (``kind``/``schema_version`` removed)."""
        raise NotImplementedError

    # ---- written once ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the result's folder atomically (the marker last); returns it."""
        path = Path(path)
        with atomic_files(path, self.marker, drop=self.files) as tmp:
            self._write(tmp)
            write_meta(tmp / self.marker, self.kind, self._meta())
        return path

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a folder written by :meth:`save` (of this lapelens or an earlier one)."""
        path = Path(path)
        need = (cls.marker, *cls.required)
        require(
            path,
            cls.kind,
            need,
            f"{path} is not a {cls.kind} result (expected {' and '.join(need)}); make one with {cls.make}.",
        )
        meta = read_meta(path, cls.kind)
        try:
            return cls._read(path, meta)
        except LapelensError:
            raise
        except (KeyError, TypeError, IndexError, ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise LapelensError(
                f"{path} is corrupt ({type(exc).__name__}: {detail}); make it again with {cls.make}."
            ) from None
