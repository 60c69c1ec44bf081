"""Texts per language: the embedded corpus, Wikipedia and FLORES from the hub, or a local folder.

``load_corpus`` returns ``{language: [document, ...]}``; ``load_parallel`` returns a DataFrame
with one column per language and one row per aligned sentence/paragraph. The embedded corpus
(LibreOffice help and three Debian books, see ``lapelens/data/corpus/NOTICE``) needs no network; hub corpora
go through ``datasets`` and fail at once, with one clear line, when the hub is unreachable.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from lapelens.constants import EMBEDDED, PAPER_LANGUAGES
from lapelens.defaults import default_languages
from lapelens.errors import LapelensError

Split = Literal["train", "valid"]
SPLITS: tuple[Split, ...] = ("train", "valid")

#: Where the embedded corpus lives inside the package (written by scripts/build_corpus.py).
CORPUS_DIR = Path(__file__).parent / "data" / "corpus"

WIKIPEDIA = "wikipedia"
WIKIPEDIA_REPO = "wikimedia/wikipedia"
WIKIPEDIA_DUMP = "20231101"
FLORES = "flores"
FLORES_REPO = "facebook/flores"
HUB_CORPORA = (WIKIPEDIA,)
#: The embedded corpus restricted to one kind of text: ``embedded:help`` (LibreOffice help pages and UI
#: strings) and ``embedded:books`` (the three Debian books), for checking what a result owes to the text.
EMBEDDED_SOURCES = {"help": "LibreOffice help and UI text", "books": "the Debian books"}
#: Page prefixes of the book paragraphs in the embedded corpus (every other page is LibreOffice's).
BOOK_PAGES = ("handbook/", "reference/", "install/")
HUB_PARALLEL = (FLORES,)

#: lapelens code -> FLORES-200 code.
FLORES_CODES = {
    "en": "eng_Latn", "zh": "zho_Hans", "fr": "fra_Latn", "es": "spa_Latn", "vi": "vie_Latn",
    "id": "ind_Latn", "ja": "jpn_Jpan", "de": "deu_Latn", "ru": "rus_Cyrl", "ko": "kor_Hang",
    "pt": "por_Latn", "it": "ita_Latn", "ar": "arb_Arab", "hi": "hin_Deva", "tr": "tur_Latn",
    "nl": "nld_Latn", "pl": "pol_Latn", "sv": "swe_Latn", "th": "tha_Thai", "uk": "ukr_Cyrl",
    "bn": "ben_Beng", "sw": "swh_Latn", "fa": "pes_Arab", "he": "heb_Hebr", "el": "ell_Grek",
    "cs": "ces_Latn", "ro": "ron_Latn", "hu": "hun_Latn", "fi": "fin_Latn", "da": "dan_Latn",
    "ca": "cat_Latn", "ms": "zsm_Latn", "ta": "tam_Taml", "ur": "urd_Arab",
}  # fmt: skip
#: FLORES split names; lapelens' train/valid map onto dev/devtest.
_FLORES_SPLITS = {"dev": ("dev",), "devtest": ("devtest",), "train": ("dev",), "valid": ("devtest",),
                  "all": ("dev", "devtest")}  # fmt: skip

#: Per-language character budget for Wikipedia when none is given.
WIKIPEDIA_CHARS = 2_000_000
#: Share of Wikipedia articles (by hash of the article id) that lapelens calls "valid".
VALID_PERCENT = 5

_LANG_CODE = re.compile(r"^[a-z]{2,3}(-[a-z]{2,4})?$")


def load_corpus(
    name: str | os.PathLike = EMBEDDED,
    split: str = "train",  # a Split; checked at run time with a clear error, as it comes from users
    languages: Sequence[str] | None = None,
    *,
    max_chars: int | None = None,
    seed: int = 0,
    load_dataset: Callable[..., Any] | None = None,
) -> dict[str, list[str]]:
    """Documents per language, in a fixed order.

    Args:
        name: ``"embedded"`` (shipped, offline), ``"wikipedia"`` (``wikimedia/wikipedia``,
            dump 20231101, streamed) or a folder holding ``{lang}.txt`` (one document per line)
            or ``{lang}.jsonl`` (a ``"text"`` field per line); ``{lang}.{split}.txt``/``.jsonl``
            take precedence, and a plain ``{lang}.txt`` is the ``train`` split.
        split: ``"train"`` or ``"valid"`` (disjoint by help page / article / file).
        languages: lapelens codes; ``None`` = every language the corpus has (the paper's seven
            for Wikipedia).
        max_chars: per-language character budget. Wikipedia: documents are sampled (shuffled
            stream, fixed ``seed``) until the budget is reached, as Tang et al. sampled a fixed
            amount of text per language; default ``WIKIPEDIA_CHARS``. Other corpora: truncate
            to whole documents within the budget; default no limit.
        seed: the seed of Wikipedia's shuffled stream.
        load_dataset: a ``datasets.load_dataset``-like callable (tests inject one).
    """
    if split not in SPLITS:
        raise LapelensError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    if str(name) == EMBEDDED:
        corpus = _load_embedded(split, languages)
    elif str(name).partition(":")[::2] in ((EMBEDDED, s) for s in EMBEDDED_SOURCES):
        corpus = _load_embedded(split, languages, str(name).partition(":")[2])
    elif str(name) == WIKIPEDIA:
        budget = WIKIPEDIA_CHARS if max_chars is None else max_chars
        corpus = _load_wikipedia(split, languages, budget, seed, load_dataset)
        max_chars = None  # already applied while streaming
    elif Path(name).is_dir():
        corpus = _load_folder(Path(name), split, languages)
    else:
        raise LapelensError(
            f"unknown corpus {str(name)!r}: use {EMBEDDED!r} (or {', '.join(repr(f'{EMBEDDED}:{s}') for s in EMBEDDED_SOURCES)}), "
            f"{WIKIPEDIA!r} or a folder of {{lang}}.txt / {{lang}}.jsonl files"
        )
    if max_chars is not None:
        corpus = {lang: _truncate(docs, max_chars) for lang, docs in corpus.items()}
    for lang, docs in corpus.items():
        if not docs or not any(d.strip() for d in docs):
            raise LapelensError(
                f"corpus {str(name)!r} has no {split} text for language {lang!r}; "
                "add documents for it or leave it out of languages"
            )
    return corpus


def load_parallel(
    name: str = EMBEDDED,
    split: str = "all",
    languages: Sequence[str] | None = None,
    *,
    repo: str = FLORES_REPO,
    load_dataset: Callable[..., Any] | None = None,
) -> pd.DataFrame:
    """Aligned texts: one row per paragraph/sentence, one column per language.

    Only rows present in every requested language are kept. ``"embedded"``: rows indexed by
    ``"{help page}#{paragraph id}"``, splits ``"train"``, ``"valid"``, ``"all"``; languages
    default to the paper's seven. ``"flores"``: FLORES-200 (``facebook/flores``, one config per
    language), splits ``"dev"``, ``"devtest"``, ``"all"`` (``"train"``/``"valid"`` mean dev/devtest),
    rows indexed by the FLORES sentence id.
    """
    langs = list(languages) if languages is not None else list(PAPER_LANGUAGES)
    if name == EMBEDDED:
        return _parallel_embedded(split, langs)
    if name == FLORES:
        return _parallel_flores(split, langs, repo, load_dataset)
    raise LapelensError(f"unknown parallel corpus {name!r}: use {EMBEDDED!r} or {FLORES!r}")


def corpus_languages(name: str | os.PathLike = EMBEDDED, split: str = "train") -> list[str]:
    """The languages a corpus has, without reading its text (Wikipedia: the paper's seven)."""
    if str(name) == EMBEDDED:
        return embedded_languages()
    if str(name) == WIKIPEDIA:
        return list(PAPER_LANGUAGES)
    if Path(name).is_dir():
        return _order(_folder_files(Path(name), split))
    return list(PAPER_LANGUAGES)  # unknown name: load_corpus says what is wrong


def default_languages_of(name: str | os.PathLike = EMBEDDED, split: str = "train") -> list[str]:
    """Every command's default languages on this corpus: the paper's seven if it has them all
    (the embedded corpus does), else all it has."""
    return default_languages(corpus_languages(name, split))


# -- embedded ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def embedded_manifest() -> dict:
    """Sources, versions, settings and counts of the shipped corpus."""
    path = CORPUS_DIR / "manifest.json"
    if not path.exists():
        raise LapelensError(
            f"the embedded corpus is missing from {CORPUS_DIR}; rebuild it with `lapelens corpus build`"
        )
    return json.loads(path.read_text())


def embedded_languages() -> list[str]:
    """Languages of the embedded corpus, the paper's seven first."""
    return list(embedded_manifest()["languages"])


def _check_languages(languages: Sequence[str] | None, available: Sequence[str], where: str) -> list[str]:
    if languages is None:
        return list(available)
    if isinstance(languages, str):
        languages = [languages]
    missing = [lang for lang in languages if lang not in available]
    if missing:
        raise LapelensError(f"unknown language code(s) {missing} for {where}; it has {list(available)}")
    return list(dict.fromkeys(languages))


@lru_cache(maxsize=64)
def _embedded_pages(lang: str, split: str) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """(page, paragraph ids, paragraphs) of one language and split, in page order."""
    path = CORPUS_DIR / "mono" / f"{lang}.{split}.jsonl.xz"
    with lzma.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return tuple((r["page"], tuple(r["ids"]), tuple(r["paragraphs"])) for r in rows)


def _load_embedded(split: str, languages: Sequence[str] | None, source: str | None = None) -> dict[str, list[str]]:
    langs = _check_languages(languages, embedded_languages(), "the embedded corpus")
    keep = (lambda page: True) if source is None else (lambda page: page.startswith(BOOK_PAGES) == (source == "books"))
    return {lang: ["\n".join(pars) for page, _, pars in _embedded_pages(lang, split) if keep(page)] for lang in langs}


def embedded_pages(lang: str, split: Split = "train") -> list[str]:
    """Help-page path of each embedded document, aligned with ``load_corpus("embedded")[lang]``."""
    _check_languages([lang], embedded_languages(), "the embedded corpus")
    return [page for page, _, _ in _embedded_pages(lang, split)]


def _parallel_embedded(split: str, langs: list[str]) -> pd.DataFrame:
    if split not in ("train", "valid", "all"):
        raise LapelensError(f"unknown split {split!r} for the embedded parallel set; use train, valid or all")
    langs = _check_languages(langs, embedded_languages(), "the embedded corpus")
    splits = SPLITS if split == "all" else (split,)
    columns: dict[str, dict[str, str]] = {}
    for lang in langs:
        col: dict[str, str] = {}
        for s in splits:
            for page, ids, pars in _embedded_pages(lang, s):
                col.update((f"{page}#{pid}", text) for pid, text in zip(ids, pars))
        columns[lang] = col
    # Rows in the order of the first language, kept only where every language has the paragraph.
    keys = [k for k in columns[langs[0]] if all(k in columns[lang] for lang in langs[1:])]
    frame = pd.DataFrame({lang: [columns[lang][k] for k in keys] for lang in langs}, index=pd.Index(keys, name="id"))
    frame.columns.name = "lang"
    return frame


# -- local folder -----------------------------------------------------------------------------


def _folder_files(folder: Path, split: str) -> dict[str, Path]:
    """Lang -> file for this split: {lang}.{split}.txt/.jsonl, else (train only) {lang}.txt/.jsonl."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".txt", ".jsonl") or not path.is_file():
            continue
        parts = path.name[: -len(path.suffix)].split(".")
        if len(parts) == 2 and parts[1] == split:
            found[parts[0]] = path  # a split file wins over a plain one
        elif len(parts) == 1 and split == "train":
            found.setdefault(parts[0], path)
    return found


def _read_documents(path: Path) -> list[str]:
    try:
        return _read_utf8_documents(path)
    except UnicodeDecodeError as first:
        data = path.read_bytes()  # the reader's offsets are per buffer: find the byte in the whole file
        try:
            data.decode("utf-8")
            exc = first
        except UnicodeDecodeError as whole:
            exc = whole
        line = data[: exc.start].count(b"\n") + 1
        raise LapelensError(
            f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _read_utf8_documents(path: Path) -> list[str]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise LapelensError(f'{path}:{n}: expected a JSON object with a "text" field') from None
            else:
                text = line.rstrip("\n")
            docs.append(text)
    return docs


def _order(langs: Iterable[str]) -> list[str]:
    langs = set(langs)
    return [lang for lang in PAPER_LANGUAGES if lang in langs] + sorted(langs - set(PAPER_LANGUAGES))


def _load_folder(folder: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[str]]:
    files = _folder_files(folder, split)
    if not files:
        hint = "{lang}.txt or {lang}.jsonl" if split == "train" else f"{{lang}}.{split}.txt or {{lang}}.{split}.jsonl"
        raise LapelensError(f"no {split} files in {folder}: add {hint} (one document per line)")
    where = f"folder {folder} ({split})"
    langs = _check_languages(languages, _order(files), where)
    return {lang: _read_documents(files[lang]) for lang in langs}


def _truncate(docs: list[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for doc in docs:
        if out and total + len(doc) > max_chars:
            break
        out.append(doc)
        total += len(doc)
    return out


# -- hub --------------------------------------------------------------------------------------


def _is_valid(key: str) -> bool:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 100 < VALID_PERCENT


def _offline_error(what: str, detail: str) -> LapelensError:
    return LapelensError(
        f"cannot reach the Hugging Face hub for {what} ({detail}); "
        f"use the embedded corpus instead (--corpus {EMBEDDED} / --parallel {EMBEDDED}; in Python "
        f"load_corpus({EMBEDDED!r}) / load_parallel({EMBEDDED!r}))"
    )


def hub_reachable(timeout: float = 3.0) -> str | None:
    """``None`` if the hub answers within ``timeout`` s, else why not (one short phrase)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    import httpx

    try:
        httpx.head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__} contacting {constants.ENDPOINT}"
    return None


def _hub_loader(load_dataset: Callable[..., Any] | None, what: str) -> Callable[..., Any]:
    """The injected loader, else ``datasets.load_dataset`` once the hub is known to answer.

    In offline mode (HF_HUB_OFFLINE) ``datasets`` may still serve a cached copy, and fails fast by
    itself if there is none; online, an unreachable hub would make it retry for minutes, so we
    probe first with a short timeout.
    """
    if load_dataset is not None:
        return load_dataset
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        problem = hub_reachable()
        if problem:
            raise _offline_error(what, problem)
    import datasets

    return datasets.load_dataset


def _call_hub(loader: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return loader(*args, **kwargs)
    except (ConnectionError, TimeoutError) as exc:  # datasets' "Couldn't reach ... on the Hub"
        raise _offline_error(what, _first_line(exc)) from None
    except OSError as exc:  # httpx/requests network errors subclass OSError in places
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise _offline_error(what, _first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _load_wikipedia(
    split: str, languages: Sequence[str] | None, budget: int, seed: int, load_dataset: Callable | None
) -> dict[str, list[str]]:
    langs = list(PAPER_LANGUAGES) if languages is None else list(dict.fromkeys(languages))
    bad = [lang for lang in langs if not _LANG_CODE.match(lang)]
    if bad:
        raise LapelensError(f"invalid language code(s) {bad}: use Wikipedia codes such as 'en', 'zh', 'ja'")
    if budget <= 0:
        raise LapelensError(f"max_chars must be positive, got {budget}")
    what = f"{WIKIPEDIA_REPO}"
    loader = _hub_loader(load_dataset, what)
    out = {}
    for lang in langs:
        config = f"{WIKIPEDIA_DUMP}.{lang}"
        try:
            stream = _call_hub(loader, what, WIKIPEDIA_REPO, config, split="train", streaming=True)
        except ValueError as exc:  # unknown config
            if "config" in str(exc).lower():
                raise LapelensError(
                    f"no Wikipedia dump {config!r} for language {lang!r}; check the code against "
                    f"the configs of {WIKIPEDIA_REPO}"
                ) from None
            raise
        out[lang] = _sample_documents(stream, split, budget, seed, what)
    return out


def _sample_documents(stream: Any, split: str, budget: int, seed: int, what: str) -> list[str]:
    """Shuffle the stream (buffered), keep articles of this split until ``budget`` characters."""
    if hasattr(stream, "shuffle"):
        try:
            stream = stream.shuffle(seed=seed, buffer_size=1_000)
        except TypeError:  # a map-style Dataset takes no buffer_size
            stream = stream.shuffle(seed=seed)
    docs, total = [], 0
    try:
        for n, row in enumerate(stream):
            key = str(row.get("id") or row.get("url") or row.get("title") or n)
            if _is_valid(key) != (split == "valid"):
                continue
            text = (row.get("text") or "").strip()
            if not text:
                continue
            docs.append(text)
            total += len(text)
            if total >= budget:
                break
    except (ConnectionError, TimeoutError, OSError) as exc:  # the stream reads shards lazily
        raise _offline_error(what, _first_line(exc)) from None
    return docs


def _parallel_flores(split: str, langs: list[str], repo: str, load_dataset: Callable | None) -> pd.DataFrame:
    if split not in _FLORES_SPLITS:
        raise LapelensError(f"unknown split {split!r} for FLORES; use one of {list(_FLORES_SPLITS)}")
    unknown = [lang for lang in langs if lang not in FLORES_CODES]
    if unknown:
        raise LapelensError(
            f"no FLORES-200 code known for {unknown}; known: {sorted(FLORES_CODES)} "
            "(add it to lapelens.corpus.FLORES_CODES)"
        )
    loader = _hub_loader(load_dataset, repo)
    columns = {}
    for lang in langs:
        code = FLORES_CODES[lang]
        values: dict[str, str] = {}
        for flores_split in _FLORES_SPLITS[split]:
            data = _call_hub(loader, repo, repo, code, split=flores_split)
            for n, row in enumerate(data):
                text = row.get("sentence", row.get("text"))
                values[f"{flores_split}/{row.get('id', n)}"] = text
        columns[lang] = values
    keys = [k for k in columns[langs[0]] if all(k in columns[lang] for lang in langs[1:])]
    frame = pd.DataFrame({lang: [columns[lang][k] for k in keys] for lang in langs}, index=pd.Index(keys, name="id"))
    frame.columns.name = "lang"
    return frame
