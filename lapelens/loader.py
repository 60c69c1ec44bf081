"""``lapelens.load(path)``: any saved result as its typed object.

Every kind registers itself where its class is defined (``lapelens.artifacts.register_kind``;
an experiment's result through ``lapelens.results.Result``); importing this module imports all of
them, the experiments through ``lapelens.evaluate``. ``load`` reads a folder's marker, or for a
folder written before markers had a kind, infers the kind from which marker file is present, and
returns the object. The official RUCAIBox/Language-Specific-Neurons files load too: a mask file
(``torch.save`` of ``[language][layer] -> LongTensor``) as ``LanguageNeurons``, a folder of
``activation.{lang}.train.{tag}`` files as ``ActivationStats``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lapelens.artifacts import KINDS, kind_of_marker, kinds_in, wrong_kind
from lapelens.constants import OFFICIAL_ACTIVATION, PAPER_LANGUAGES, STATS_META
from lapelens.errors import LapelensError
from lapelens.neurons import LanguageNeurons
from lapelens.parameters import ParameterMask
from lapelens.run import Run
from lapelens.stats import ActivationStats, SentenceActivations

#: The classes of every kind (importing them registered their kinds): what ``load`` returns.
TYPES = (ActivationStats, SentenceActivations, LanguageNeurons, ParameterMask, Run)
#: ``activation.{lang}.train.{tag}`` as a regular expression.
_OFFICIAL_ACTIVATION = re.compile(
    "^"
    + re.escape(OFFICIAL_ACTIVATION).replace(r"\{lang\}", "(?P<lang>[^.]+)").replace(r"\{tag\}", "(?P<tag>.+)")
    + "$"
)


def official_activation_tags(folder: Path) -> dict[str, list[str]]:
    """``{tag: [languages]}`` of the official ``activation.{lang}.train.{tag}`` files in ``folder``."""
    out: dict[str, list[str]] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else ():
        m = _OFFICIAL_ACTIVATION.match(p.name)
        if m and p.is_file():
            out.setdefault(m["tag"], []).append(m["lang"])
    return out


def load_official_stats(
    folder: Path, tag: str | None = None, languages: Sequence[str] | None = None
) -> ActivationStats:
    """Official activation files as ``ActivationStats``: the only tag in the folder unless ``tag``
    is given, every language of that tag (the paper's first, in its order) unless ``languages`` is."""
    tags = official_activation_tags(folder)
    if not tags:
        raise LapelensError(f"{folder} has neither {STATS_META} nor official activation.{{lang}}.train.{{tag}} files.")
    if tag is None:
        if len(tags) > 1:
            raise LapelensError(
                f"{folder} has official activation files with several tags {sorted(tags)}: choose one with --tag."
            )
        tag = next(iter(tags))
    if languages is None:
        langs = set(tags.get(tag, ()))
        if not langs:
            raise LapelensError(f"{folder} has no official activation files with tag {tag!r} (tags: {sorted(tags)}).")
        languages = tuple(l for l in PAPER_LANGUAGES if l in langs) + tuple(sorted(langs - set(PAPER_LANGUAGES)))
    return ActivationStats.from_official(folder, tag, tuple(languages))


def load(
    path: str | Path,
    kind: str | Sequence[str] | None = None,
    *,
    languages: Sequence[str] | None = None,
    d_mlp: int | None = None,
    tag: str | None = None,
) -> Any:
    """The saved result at ``path`` as its typed object (``ActivationStats``, ``LanguageNeurons``,
    ``ParameterMask``, ``PerturbationResult``, ``SweepResult``, ``SimilarityResult``, a ``Run`` ...).

    ``path`` is a result folder, its marker JSON file (to pick one of several results in a folder,
    e.g. ``ses.json`` beside ``dominance.json``), an official ``.pth`` mask file, or a folder of
    (or one of) official ``activation.{lang}.train.{tag}`` files. ``kind`` (one name or several)
    refuses any other kind with a clear error. ``languages`` and ``d_mlp`` apply to official mask
    files, ``tag`` and ``languages`` to official activation files (see their ``from_official``).
    """
    path = Path(path)
    wanted = (kind,) if isinstance(kind, str) else tuple(kind) if kind is not None else None
    for k in wanted or ():
        if k not in KINDS:
            raise LapelensError(f"Unknown result kind {k!r}; the kinds are {', '.join(KINDS)}.")
    if not path.exists():
        raise LapelensError(f"{path} does not exist: pass a folder written by lapelens (or an official file).")
    folder, found = path, None
    if path.is_file():
        by_marker = kind_of_marker(path)
        activation = _OFFICIAL_ACTIVATION.match(path.name)
        if by_marker:
            folder, found = path.parent, by_marker
        elif activation:
            folder, found = path.parent, "activation_stats"
            tag = tag or activation["tag"]
        else:
            _expect(path, "language_neurons", wanted)
            return LanguageNeurons.from_official(path, languages=languages, d_mlp=d_mlp)
    else:
        present = kinds_in(path)
        if wanted is not None and len(present) > 1:
            present = [k for k in present if k in wanted] or present
        if len(present) > 1:
            raise LapelensError(
                f"{path} holds several results ({', '.join(present)}): pass the marker file of the one "
                f"you want (e.g. {path / KINDS[present[0]].marker}) or kind=."
            )
        if present:
            found = present[0]
            inner = [k for k in KINDS[found].contains if wanted is not None and found not in wanted and k in wanted]
            found = inner[0] if inner else found  # e.g. the perturbation matrix inside a sweep folder
        elif official_activation_tags(path):
            found = "activation_stats"
        elif wanted is not None and len(wanted) == 1:
            found = wanted[0]  # its reader says what the folder lacks
        else:
            raise LapelensError(
                f"{path} holds no lapelens result (none of {', '.join(k.marker for k in KINDS.values())}) "
                "and no official activation files: pass a folder that lapelens saved."
            )
    _expect(path, found, wanted)
    if found == "activation_stats" and not (folder / STATS_META).is_file():
        return load_official_stats(folder, tag, languages)
    return KINDS[found].read(folder)


def _expect(path: Path, found: str, wanted: tuple[str, ...] | None) -> None:
    if wanted is not None and found not in wanted:
        raise wrong_kind(path, found, wanted)
