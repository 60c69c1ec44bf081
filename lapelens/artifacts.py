"""Saved results: their kinds, schema versions, and one ``load(path)`` for all of them.

Every result lapelens saves is a folder whose JSON *marker* file (written last, see ``_io``)
records ``kind``, ``schema_version`` and ``lapelens_version`` beside the result's own settings.
``load(path)`` reads the marker, or for a folder written before markers had a kind, infers the
kind from which marker file is present, and returns the typed object. The official
RUCAIBox/Language-Specific-Neurons files load too: a mask file (``torch.save`` of
``[language][layer] -> LongTensor``) as ``LanguageNeurons``, a folder of
``activation.{lang}.train.{tag}`` files as ``ActivationStats``.

The closed set of kinds is declared once, in ``KINDS``: the loaders, the inference and the error
messages are derived from it. A schema version grows when a kind's files change so that an older
lapelens would misread them; such a file is refused with a message saying to upgrade. A file of an
older schema is converted on loading by its kind's reader (``load_folder``'s ``upgrade``), so that
results saved by every earlier lapelens still load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from lapelens._version import __version__
from lapelens.constants import (
    DOMINANCE_META, EMBEDDINGS_META, EMBEDDINGS_TENSORS, GENERATION_META, NEURONS_META, NEURONS_TENSORS, OFFICIAL_ACTIVATION, PAPER_LANGUAGES, PARAMS_META,
    PARAMS_TENSORS, PERTURBATION_META, RUN_CONFIG, RUN_SUMMARY, SENTENCES_META, SENTENCES_TENSORS, SES_META, STATS_META,
    STATS_TENSORS, SWEEP_META,
)
from lapelens.errors import LapelensError


@dataclass(frozen=True)
class Kind:
    """One kind of saved result."""

    name: str
    #: The JSON file that marks a folder as holding this kind.
    marker: str
    #: ``"module:attribute"`` of the class (its ``load(folder)``) or function that reads it.
    reader: str
    #: How to make one, for error messages.
    make: str
    #: Version of the kind's file layout; a file with a larger one is refused, one with a smaller one
    #: converted by the reader. A marker without a version (saved before they had one) is version 1.
    schema: int = 1
    #: Kinds whose files this kind's folder also holds, as part of itself (a sweep holds its matrix).
    contains: tuple[str, ...] = ()
    #: The safetensors file of a kind saved as tensors plus marker (``save_folder``/``load_folder``).
    tensors: str | None = None

    @property
    def type_name(self) -> str:
        return self.reader.rpartition(":")[2]


#: Every kind, in the order a folder's kind is inferred (a kind before the kinds it contains).
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("run", RUN_CONFIG, "lapelens.figures.run:load_run", "`lapelens reproduce`"),
    # activation_stats schema 2: tensors are lang x layer x neuron (schema 1: layer x neuron x lang).
    Kind("activation_stats", STATS_META, "lapelens.stats:ActivationStats", "`lapelens collect`", schema=2,
         tensors=STATS_TENSORS),
    Kind("sentence_activations", SENTENCES_META, "lapelens.stats:SentenceActivations",
         "`lapelens identify --method ap` (or `lapelens.collect_sentence_means`)", tensors=SENTENCES_TENSORS),
    Kind("language_neurons", NEURONS_META, "lapelens.neurons:LanguageNeurons", "`lapelens identify`",
         tensors=NEURONS_TENSORS),
    Kind("parameter_mask", PARAMS_META, "lapelens.methods.pv:ParameterMask", "`lapelens identify --method pv`",
         tensors=PARAMS_TENSORS),
    Kind("sweep", SWEEP_META, "lapelens.evaluate.sweep:SweepResult", "`lapelens sweep`", contains=("perturbation",)),
    Kind("perturbation", PERTURBATION_META, "lapelens.evaluate.perplexity:PerturbationResult", "`lapelens perturb`"),
    # similarity/dominance schema 2: measures with intervals, all-pairs control, retrieval (schema 1: raw cosine).
    Kind("similarity", SES_META, "lapelens.evaluate.similarity:SimilarityResult", "`lapelens ses`", schema=2),
    Kind("dominance", DOMINANCE_META, "lapelens.evaluate.similarity:DominanceResult", "`lapelens ses`", schema=2),
    Kind("sentence_embeddings", EMBEDDINGS_META, "lapelens.evaluate.embeddings:SentenceEmbeddings",
         "`lapelens ses --embeddings-out`", tensors=EMBEDDINGS_TENSORS),
    Kind("generation", GENERATION_META, "lapelens.evaluate.generation:GenerationResult",
         "`lapelens steer` or `lapelens generate`"),
)}
#: The kinds an intervention accepts (see ``lapelens.selection.Selection``).
SELECTION_KINDS = ("language_neurons", "parameter_mask")
#: ``activation.{lang}.train.{tag}`` as a regular expression.
_OFFICIAL_ACTIVATION = re.compile(
    "^" + re.escape(OFFICIAL_ACTIVATION).replace(r"\{lang\}", "(?P<lang>[^.]+)").replace(r"\{tag\}", "(?P<tag>.+)") + "$")


def stamp(kind: str, meta: dict) -> dict:
    """``meta`` with ``kind``, ``schema_version`` and ``lapelens_version`` first (a version already
    in ``meta``, from the result this one was loaded from, is kept)."""
    out = {"kind": kind, "schema_version": KINDS[kind].schema, "lapelens_version": __version__}
    out.update(meta)
    out["kind"], out["schema_version"] = kind, KINDS[kind].schema
    return out


def write_meta(file: Path, kind: str, meta: dict) -> None:
    """Write the marker JSON of a result of ``kind``."""
    file.write_text(json.dumps(stamp(kind, meta), indent=2, ensure_ascii=False, default=str))


def checked(path: Path, meta: dict, kind: str) -> dict:
    """``meta`` without ``kind``/``schema_version`` once both fit ``kind`` (absent: an older save)."""
    meta = dict(meta)
    found, version = meta.pop("kind", None), meta.pop("schema_version", None)
    if found is not None and found != kind:
        raise wrong_kind(path, found, (kind,))
    expected = KINDS[kind].schema
    if version is not None and (not isinstance(version, int) or version > expected):
        raise LapelensError(
            f"{path} holds a {kind} result of schema version {version} (written by lapelens "
            f"{meta.get('lapelens_version', '?')}); this lapelens {__version__} reads schema {expected} and older: "
            "update your lapelens clone (git pull && pip install -e .), or recompute the result with this version.")
    return meta


#: ``upgrade(schema_version, meta, tensors) -> (meta, tensors)``: a folder of an older schema, in the current one.
Upgrade = Callable[[int, dict, dict], tuple[dict, dict]]


def read_meta(path: Path, kind: str) -> dict:
    """The checked marker JSON of the result of ``kind`` in folder ``path``."""
    return checked(path, _marker(path, kind), kind)


def _marker(path: Path, kind: str) -> dict:
    """The marker JSON of the result of ``kind`` in folder ``path``, as written (not checked)."""
    file = path / KINDS[kind].marker
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LapelensError(f"{file} is corrupt ({type(exc).__name__}: {exc}); make it again with {KINDS[kind].make}.") from None
    if not isinstance(meta, dict):
        raise LapelensError(f"{file} is corrupt (not a JSON object); make it again with {KINDS[kind].make}.")
    return meta


def load_tensors(file: Path, kind: str) -> dict:
    """``safetensors.torch.load_file``, with one clear error for a truncated or damaged file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise LapelensError(f"{file} is missing; make the {kind} result again with {KINDS[kind].make}.") from None
    except Exception as exc:  # safetensors raises its own error type for every malformed file
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LapelensError(
            f"{file} is corrupt or truncated ({detail}; {file.stat().st_size} bytes): the save was interrupted "
            f"or the copy is incomplete; copy it again or make it again with {KINDS[kind].make}.") from None


def save_folder(path: str | Path, kind: str, tensors: dict, meta: dict) -> Path:
    """Write a result of ``kind`` as its folder: one safetensors file and its marker JSON, atomically
    (a stop never leaves new tensors beside old metadata); returns the folder."""
    from safetensors.torch import save_file

    from lapelens._io import atomic_files

    path, spec = Path(path), KINDS[kind]
    with atomic_files(path, spec.marker) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / spec.tensors))
        write_meta(tmp / spec.marker, kind, meta)
    return path


def load_folder(path: str | Path, kind: str, message: str, upgrade: Upgrade | None = None) -> tuple[dict, dict]:
    """(checked marker JSON, tensors) of a result folder of ``kind``; ``message`` is the error when
    ``path`` is not one (a folder of another kind gets the wrong-kind error instead).

    A folder of an older schema version than the kind's goes through ``upgrade`` first, so that the
    caller only ever sees the current layout.
    """
    path, spec = Path(path), KINDS[kind]
    require(path, kind, (spec.tensors, spec.marker), message)
    raw = _marker(path, kind)
    meta, tensors = checked(path, raw, kind), load_tensors(path / spec.tensors, kind)
    version = raw.get("schema_version")
    version = 1 if version is None else version
    if version < spec.schema:
        if upgrade is None:  # never read an older layout as the current one
            raise LapelensError(f"{path} holds a {kind} result of schema version {version}, which this lapelens "
                                f"{__version__} cannot convert to schema {spec.schema}: make it again with {spec.make}.")
        meta, tensors = upgrade(version, meta, tensors)
    return meta, tensors


def kinds_in(path: Path) -> list[str]:
    """The kinds of the results in folder ``path``, from the markers present (a kind that another
    found kind contains is not listed on its own)."""
    if not path.is_dir():
        return []
    found = []
    for kind in KINDS.values():
        if not (path / kind.marker).is_file():
            continue
        if kind.name == "run" and not (path / RUN_SUMMARY).is_file():
            continue  # a model folder has a config.json too
        found.append(kind.name)
    inner = {c for k in found for c in KINDS[k].contains}
    return [k for k in found if k not in inner]


def wrong_kind(path: Path, found: str | Sequence[str], wanted: Iterable[str]) -> LapelensError:
    found = [found] if isinstance(found, str) else list(found)
    wanted = list(wanted)
    what = " and ".join(f"a {k} result ({KINDS[k].type_name})" if k in KINDS else f"a {k!r} result" for k in found)
    want = " or ".join(f"a {k} result ({KINDS[k].type_name}, made by {KINDS[k].make})" for k in wanted)
    return LapelensError(f"{path} holds {what}, not {want}: pass the right folder, or read it with lapelens.load({str(path)!r}).")


def require(path: Path, kind: str, files: Sequence[str], message: str) -> None:
    """Refuse a folder that lacks ``files``: naming the kind it holds instead, if any, else ``message``."""
    if all((path / f).is_file() for f in files):
        return
    other = [k for k in kinds_in(path) if k != kind]
    if other:
        raise wrong_kind(path, other, (kind,))
    raise LapelensError(message)


def _reader(kind: str) -> Any:
    module, _, name = KINDS[kind].reader.partition(":")
    obj = getattr(import_module(module), name)
    return obj.load if isinstance(obj, type) else obj


def official_activation_tags(folder: Path) -> dict[str, list[str]]:
    """``{tag: [languages]}`` of the official ``activation.{lang}.train.{tag}`` files in ``folder``."""
    out: dict[str, list[str]] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else ():
        m = _OFFICIAL_ACTIVATION.match(p.name)
        if m and p.is_file():
            out.setdefault(m["tag"], []).append(m["lang"])
    return out


def load_official_stats(folder: Path, tag: str | None = None, languages: Sequence[str] | None = None) -> Any:
    """Official activation files as ``ActivationStats``: the only tag in the folder unless ``tag``
    is given, every language of that tag (the paper's first, in its order) unless ``languages`` is."""
    from lapelens.stats import ActivationStats

    tags = official_activation_tags(folder)
    if not tags:
        raise LapelensError(f"{folder} has neither {STATS_META} nor official activation.{{lang}}.train.{{tag}} files.")
    if tag is None:
        if len(tags) > 1:
            raise LapelensError(f"{folder} has official activation files with several tags {sorted(tags)}: choose one with --tag.")
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
    ``ParameterMask``, ``PerturbationResult``, ``SweepResult``, ``SimilarityResult``, ...).

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
        by_marker = [k.name for k in KINDS.values() if k.marker == path.name]
        activation = _OFFICIAL_ACTIVATION.match(path.name)
        if by_marker and (by_marker[0] != "run" or (path.parent / RUN_SUMMARY).is_file()):
            folder, found = path.parent, by_marker[0]
        elif activation:
            folder, found = path.parent, "activation_stats"
            tag = tag or activation["tag"]
        else:
            _expect(path, "language_neurons", wanted)
            from lapelens.neurons import LanguageNeurons

            return LanguageNeurons.from_official(path, languages=languages, d_mlp=d_mlp)
    else:
        present = kinds_in(path)
        if wanted is not None and len(present) > 1:
            present = [k for k in present if k in wanted] or present
        if len(present) > 1:
            raise LapelensError(f"{path} holds several results ({', '.join(present)}): pass the marker file of the one "
                                f"you want (e.g. {path / KINDS[present[0]].marker}) or kind=.")
        if present:
            found = present[0]
            inner = [k for k in KINDS[found].contains if wanted is not None and found not in wanted and k in wanted]
            found = inner[0] if inner else found  # e.g. the perturbation matrix inside a sweep folder
        elif official_activation_tags(path):
            found = "activation_stats"
        elif wanted is not None and len(wanted) == 1:
            found = wanted[0]  # its reader says what the folder lacks
        else:
            raise LapelensError(f"{path} holds no lapelens result (none of {', '.join(k.marker for k in KINDS.values())}) "
                                "and no official activation files: pass a folder that lapelens saved.")
    _expect(path, found, wanted)
    if found == "activation_stats" and not (folder / STATS_META).is_file():
        return load_official_stats(folder, tag, languages)
    return _reader(found)(folder)


def _expect(path: Path, found: str, wanted: tuple[str, ...] | None) -> None:
    if wanted is not None and found not in wanted:
        raise wrong_kind(path, found, wanted)


#: How ``summary.json`` names a pair of languages (source, target): ``"en->zh"``.
PAIR_SEPARATOR = "->"


def pair_key(key: str) -> str:
    """A ``summary.json`` row key in the current form: ``"('en', 'zh')"`` (runs before lapelens
    wrote ``"en->zh"``) becomes ``"en->zh"``; any other key is returned unchanged."""
    import ast

    if key.startswith("(") and key.endswith(")"):
        try:
            parts = ast.literal_eval(key)
        except (ValueError, SyntaxError):
            return key
        if isinstance(parts, tuple):
            return PAIR_SEPARATOR.join(map(str, parts))
    return key


def read_summary(run_dir: str | Path) -> dict:
    """A run's ``summary.json``, with pair keys in the ``"en->zh"`` form whichever form it was written in."""
    file = Path(run_dir) / RUN_SUMMARY
    if not file.is_file():
        raise LapelensError(f"{run_dir} has no {RUN_SUMMARY}: it is not a finished `lapelens reproduce` run.")
    summary = json.loads(file.read_text(encoding="utf-8"))
    return {k: ({pair_key(r): v for r, v in value.items()} if isinstance(value, dict) else value)
            for k, value in summary.items()}
