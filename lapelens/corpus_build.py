"""Build the embedded corpus from the LibreOffice help, as Debian packages it (MPL-2.0).

The LibreOffice help is translated paragraph by paragraph: every page exists in every language
with the same paragraph ids, which gives a monolingual corpus per language *and* an aligned
parallel set from one source. This module downloads the ``libreoffice-help-*`` packages with
``apt-get download``, unpacks them with ``dpkg-deb -x``, extracts ``(page, paragraph id) -> text``,
cleans it and writes ``lapelens/data/corpus/``. Run it as ``python scripts/build_corpus.py`` or
``lapelens corpus build``; it is reproducible but not run by CI.

Cleaning, in order, per language X and paragraph:
markup stripped (the macOS alternative of a ``switchinline`` dropped, code blocks skipped),
whitespace collapsed, Unicode NFC; dropped if too short, if X != en and the text equals the
English paragraph (untranslated), if langid.py does not say X, or if the same text was already
kept in X (duplicates, so that no paragraph can sit in both splits).
"""

from __future__ import annotations

import hashlib
import html
import json
import lzma
import re
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable

from lapelens.constants import PAPER_LANGUAGES
from lapelens.errors import LapelensError
from lapelens.langid import langid_classify

#: lapelens code -> suffix of the Debian package ``libreoffice-help-<suffix>``.
HELP_PACKAGES = {
    "en": "en-us", "zh": "zh-cn", "fr": "fr", "es": "es", "vi": "vi", "id": "id", "ja": "ja",
    "de": "de", "ru": "ru", "ko": "ko", "pt": "pt", "it": "it",
}  # fmt: skip
EXTRA_LANGUAGES = ("de", "ru", "ko", "pt", "it")
#: lapelens code -> the directory name under usr/share/libreoffice/help/.
_HELP_DIRS = {"en": "en-US", "zh": "zh-CN"}

#: Share of help pages (by hash of the page path) that go to ``valid``.
VALID_PERCENT = 6
#: Minimum length of a kept paragraph, in characters; CJK packs more per character.
MIN_CHARS = 20
MIN_CHARS_CJK = 8
_CJK = {"zh", "ja", "ko"}
#: Languages langid.py may confuse with a kept one, and accepted for it (Indonesian ~ Malay).
_LANGID_ALIASES = {"id": {"id", "ms"}}

_ID = re.compile(r"^(par|hd)_id")
_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "h"}
_SKIP_CLASSES = {"MAC", "code", "bascode"}  # macOS twin of a switchinline; program text
_VOID = {"img", "br", "input", "meta", "link", "hr", "wbr", "source", "area", "col", "embed"}
_SPACE = re.compile(r"\s+")


class _PageParser(HTMLParser):
    """Collects ``(id, text)`` of every paragraph/heading with a ``par_id``/``hd_id`` id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[tuple[str, str]] = []
        self._current: tuple[str, str] | None = None  # (id, tag)
        self._parts: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # open tags inside the paragraph, skipping?
        self._skip_depth = 0
        self._in_code = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if tag in ("pre", "code"):
            self._in_code += 1
        if self._current is None:
            pid = a.get("id") or ""
            if tag in _BLOCKS and _ID.match(pid) and not self._in_code:
                self._current, self._parts, self._stack = (pid, tag), [], []
                self._skip_depth = 1 if classes & _SKIP_CLASSES else 0
            return
        if tag in _VOID:
            return
        # A switchinline holds one hidden <span> per platform/application; keep the default case.
        hidden_case = "hidden" in a and not (a.get("id") or "").startswith("default")
        skip = bool(classes & _SKIP_CLASSES) or hidden_case
        self._stack.append((tag, skip))
        self._skip_depth += skip

    def handle_endtag(self, tag: str) -> None:
        if tag in ("pre", "code"):
            self._in_code = max(0, self._in_code - 1)
        if self._current is None:
            return
        if tag == self._current[1] and not any(t == tag for t, _ in self._stack):
            if not self._skip_depth:
                self.paragraphs.append((self._current[0], "".join(self._parts)))
            self._current = None
            return
        while self._stack:  # tolerate unclosed inline tags
            t, skip = self._stack.pop()
            self._skip_depth -= skip
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._current is not None and not self._skip_depth:
            self._parts.append(data)


def clean_text(text: str) -> str:
    """Entities resolved, whitespace collapsed to single spaces, Unicode NFC."""
    text = html.unescape(text)
    text = _SPACE.sub(" ", text).strip()
    return unicodedata.normalize("NFC", text)


def extract_page(path: Path) -> list[tuple[str, str]]:
    """``(paragraph id, clean text)`` of one help page, in page order, first occurrence of each id."""
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    seen: set[str] = set()
    out = []
    for pid, raw in parser.paragraphs:
        if pid in seen:
            continue
        seen.add(pid)
        out.append((pid, clean_text(raw)))
    return out


def page_split(page: str) -> str:
    """``"valid"`` for about VALID_PERCENT % of pages, fixed by a hash of the page path."""
    digest = hashlib.sha256(page.encode()).digest()
    return "valid" if int.from_bytes(digest[:4], "big") % 100 < VALID_PERCENT else "train"


# -- download ---------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise LapelensError(f"{cmd[0]} not found: the corpus build needs a Debian/Ubuntu system") from exc
    except subprocess.CalledProcessError as exc:
        msg = (exc.stderr or exc.stdout).strip().splitlines()
        raise LapelensError(f"{' '.join(cmd)} failed: {msg[-1] if msg else exc}") from exc
    return done.stdout


def fetch_package(package: str, work_dir: Path) -> tuple[Path, str]:
    """Download (if not there) and unpack one Debian package; returns (unpacked root, version)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(work_dir.glob(f"{package}_*.deb"))
    if not debs:
        _run(["apt-get", "download", package], work_dir)
        debs = sorted(work_dir.glob(f"{package}_*.deb"))
    if not debs:
        raise LapelensError(f"apt-get download {package} produced no .deb in {work_dir}")
    deb = debs[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"], work_dir).strip()
    root = work_dir / f"x_{package}"
    if not root.exists():
        tmp = work_dir / f"x_{package}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], work_dir)
        tmp.rename(root)
    return root, version


def help_dir(root: Path, lang: str) -> Path:
    return root / "usr/share/libreoffice/help" / _HELP_DIRS.get(lang, lang)


# -- build ------------------------------------------------------------------------------------


@dataclass
class Counts:
    """What the build kept and dropped, per language (printed at the end, saved in manifest)."""

    kept: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # lang -> split -> [docs, pars, chars]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # lang -> reason -> n

    def drop(self, lang: str, reason: str) -> None:
        d = self.dropped.setdefault(lang, {})
        d[reason] = d.get(reason, 0) + 1


def _keep(lang: str, text: str, english: str | None, seen: set[str], counts: Counts) -> bool:
    if len(text) < (MIN_CHARS_CJK if lang in _CJK else MIN_CHARS):
        counts.drop(lang, "short")
    elif lang != "en" and (english is None or text == english):
        counts.drop(lang, "untranslated" if english is not None else "not_in_english")
    elif text in seen:
        counts.drop(lang, "duplicate")
    elif langid_classify(text)[0] not in _LANGID_ALIASES.get(lang, {lang}):
        counts.drop(lang, "wrong_language")
    else:
        seen.add(text)
        return True
    return False


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    # xz: a quarter smaller than gzip on this text; no timestamp inside, so rebuilds are byte-identical.
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    path.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def build(
    out_dir: Path,
    work_dir: Path,
    languages: Iterable[str] = PAPER_LANGUAGES,
    log=print,
) -> Counts:
    """Download, extract, clean and write the embedded corpus; returns the counts."""
    languages = list(dict.fromkeys(["en", *languages]))
    unknown = [lang for lang in languages if lang not in HELP_PACKAGES]
    if unknown:
        raise LapelensError(f"no LibreOffice help package for {unknown}; choose from {sorted(HELP_PACKAGES)}")
    sources: dict[str, tuple[str, str]] = {}  # lang -> (package, version)
    roots: dict[str, Path] = {}
    for lang in languages:
        package = f"libreoffice-help-{HELP_PACKAGES[lang]}"
        log(f"fetching {package}")
        root, version = fetch_package(package, work_dir)
        sources[lang] = (package, version)
        roots[lang] = help_dir(root, lang)

    en_dir = roots["en"]
    pages = sorted(p.relative_to(en_dir).as_posix() for p in (en_dir / "text").rglob("*.html"))
    log(f"{len(pages)} help pages")
    counts = Counts()
    seen: dict[str, set[str]] = {lang: set() for lang in languages}
    # docs[lang][split] = [{"page", "ids", "paragraphs"}]
    docs: dict[str, dict[str, list[dict]]] = {lang: {"train": [], "valid": []} for lang in languages}
    for n, page in enumerate(pages):
        if n % 250 == 0:
            log(f"  page {n}/{len(pages)}")
        english = dict(extract_page(en_dir / page))
        split = page_split(page)
        for lang in languages:
            path = roots[lang] / page
            if not path.exists():
                counts.drop(lang, "page_missing")
                continue
            ids, texts = [], []
            for pid, text in extract_page(path) if lang != "en" else english.items():
                if _keep(lang, text, english.get(pid), seen[lang], counts):
                    ids.append(pid)
                    texts.append(text)
            if texts:
                docs[lang][split].append({"page": page, "ids": ids, "paragraphs": texts})

    out_dir.mkdir(parents=True, exist_ok=True)
    mono = out_dir / "mono"
    mono.mkdir(exist_ok=True)
    for lang in languages:
        counts.kept[lang] = {}
        for split, rows in docs[lang].items():
            _write_jsonl(mono / f"{lang}.{split}.jsonl.xz", rows)
            n_par = sum(len(r["paragraphs"]) for r in rows)
            n_chars = sum(len("\n".join(r["paragraphs"])) for r in rows)
            counts.kept[lang][split] = [len(rows), n_par, n_chars]
    _write_parallel(out_dir, docs, languages, counts)
    manifest = {
        "sources": {lang: {"package": p, "version": v} for lang, (p, v) in sources.items()},
        "languages": languages,
        "valid_percent": VALID_PERCENT,
        "min_chars": MIN_CHARS,
        "min_chars_cjk": MIN_CHARS_CJK,
        "counts": counts.kept,
        "dropped": counts.dropped,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return counts


def _write_parallel(out_dir: Path, docs: dict, languages: list[str], counts: Counts) -> None:
    """The parallel set: ids ("{page}#{paragraph id}") of paragraphs kept in every paper language.

    Only the ids are stored (the texts are in mono/); ``load_parallel`` joins mono/ on them, and
    can do so for any subset of languages.
    """
    for split in ("train", "valid"):
        have: dict[str, set[str]] = {}
        for lang in languages:
            have[lang] = {f"{r['page']}#{pid}" for r in docs[lang][split] for pid in r["ids"]}
        order = [f"{r['page']}#{pid}" for r in docs["en"][split] for pid in r["ids"]]
        rows = [key for key in order if all(key in have[lang] for lang in PAPER_LANGUAGES if lang in have)]
        data = "".join(key + "\n" for key in rows).encode()
        (out_dir / f"parallel.{split}.txt.xz").write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        counts.kept.setdefault("_parallel", {})[split] = [len(rows), 0, 0]


def report(counts: Counts, out_dir: Path) -> str:
    """The closing table: documents, paragraphs, characters per language and split."""
    lines = [f"{'lang':6}{'split':7}{'docs':>7}{'paragraphs':>12}{'chars':>11}"]
    for lang, splits in counts.kept.items():
        if lang.startswith("_"):
            continue
        for split, (d, p, c) in splits.items():
            lines.append(f"{lang:6}{split:7}{d:>7}{p:>12}{c:>11}")
    for split, (rows, full, _) in counts.kept.get("_parallel", {}).items():
        lines.append(f"parallel {split}: {rows} paragraphs kept in all of {', '.join(PAPER_LANGUAGES)}")
    for lang, reasons in counts.dropped.items():
        lines.append(f"dropped {lang}: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    lines.append(f"{out_dir}: {size / 1e6:.2f} MB on disk")
    return "\n".join(lines)
