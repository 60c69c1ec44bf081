"""Build the embedded corpus from Debian packages: LibreOffice help and UI translations, and three
Debian books.

The LibreOffice help is translated paragraph by paragraph: every page exists in every language
with the same paragraph ids, which gives a monolingual corpus per language *and* an aligned
parallel set from one source (MPL-2.0). This module downloads ``libreoffice-help-*`` and
``libreoffice-l10n-*`` with ``apt-get download``, unpacks them with ``dpkg-deb -x``, extracts
``(page, paragraph id) -> text`` from the help HTML and ``(dialog, message context) -> text`` from
the UI catalogues (.mo; their msgid is the English side). The zh and ja help is mostly
untranslated, so three books translated into the paper's languages are added the same way: the
Debian Administrator's Handbook (``debian-handbook``, GPL-2.0+ or CC-BY-SA-3.0), the Debian
Reference (``debian-reference-*``, GPL-2.0+) and the Installation Guide
(``installation-guide-amd64``, GPL-2), with paragraphs aligned by their position in a page. The
result is cleaned and written to ``lapelens/data/corpus/``. Run it as
``python scripts/build_corpus.py`` or ``lapelens corpus build``; it is reproducible but not run by CI.

Cleaning, in order, per language X and paragraph: markup stripped (the non-default cases of a
``switchinline`` and code blocks skipped; UI mnemonics and product-name placeholders resolved, UI
strings with run-time arguments dropped), whitespace collapsed, Unicode NFC; then dropped if
too short, if X != en and the text equals the English one (untranslated), if the same text was
already kept in X (duplicates: no paragraph can sit in both splits), if it is mostly symbols or,
in zh/ja/ko, half or more Latin-script names (in ja: too little kana), or if langid.py gives X
less than LANGID_MIN_PROB.
langdetect is kept out of the build so that the tests can use it as an independent check, except
for zh/ja/ko paragraphs whose letters are 30-50 % Latin, where it must agree with langid.py.
"""

from __future__ import annotations

import hashlib
import html
import json
import lzma
import re
import shutil
import struct
import subprocess
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable

from lapelens.constants import PAPER_LANGUAGES
from lapelens.errors import LapelensError
from lapelens.langid import detect_language, is_han, langid_probabilities

#: lapelens code -> suffix of the Debian package ``libreoffice-help-<suffix>``.
HELP_PACKAGES = {
    "en": "en-us", "zh": "zh-cn", "fr": "fr", "es": "es", "vi": "vi", "id": "id", "ja": "ja",
    "de": "de", "ru": "ru", "ko": "ko", "pt": "pt", "it": "it",
}  # fmt: skip
EXTRA_LANGUAGES = ("de", "ru", "ko", "pt", "it")
#: The Debian Administrator's Handbook (package ``debian-handbook``, GPL-2.0+ or CC-BY-SA-3.0): one
#: book translated into every paper language, which the LibreOffice help is not (zh and ja help is
#: mostly untranslated). lapelens code -> its directory under usr/share/doc/debian-handbook/html/.
#: pt is left out: the book's Portuguese is pt-BR, the LibreOffice one pt-PT.
HANDBOOK_PACKAGE = "debian-handbook"
HANDBOOK_DIRS = {
    "en": "en-US", "zh": "zh-CN", "fr": "fr-FR", "es": "es-ES", "vi": "vi-VN", "id": "id-ID", "ja": "ja-JP",
    "de": "de-DE", "ru": "ru-RU", "ko": "ko-KR", "it": "it-IT",
}  # fmt: skip
#: The Debian Reference (packages ``debian-reference-<suffix>``, GPL-2.0+, by Osamu Aoki), one
#: chapter per page: more zh and ja prose. No vi translation; pt left out as above.
REFERENCE_PACKAGES = {"en": "en", "zh": "zh-cn", "fr": "fr", "es": "es", "id": "id", "ja": "ja", "de": "de", "it": "it"}
#: The Debian Installation Guide (package ``installation-guide-amd64``, GPL-2): one folder per language.
INSTALL_PACKAGE = "installation-guide-amd64"
INSTALL_DIRS = {
    "en": "en", "zh": "zh_CN", "fr": "fr", "es": "es", "vi": "vi", "id": "id", "ja": "ja",
    "de": "de", "ru": "ru", "ko": "ko", "it": "it",
}  # fmt: skip
#: The books, by the prefix of their pages.
BOOK_PREFIXES = ("handbook/", "reference/", "install/")
#: lapelens code -> the directory name under usr/share/libreoffice/help/.
_HELP_DIRS = {"en": "en-US", "zh": "zh-CN"}

#: Share of help pages (by hash of the page path) that go to ``valid``. Fixed since the first
#: release: a model trained on an earlier build's train split has never seen a valid page.
VALID_PERCENT = 6
#: The same for UI dialogs/catalogues (added in the second build, so free to choose): a larger
#: share gives the languages with little help text (zh, ja) a valid split of >= 50 k characters.
VALID_PERCENT_UI = 40
#: The same for the pages of the three Debian books (added in the third build).
VALID_PERCENT_BOOKS = 8
#: Train characters kept for a language outside the paper's seven (pages sampled by hash), to
#: keep the package small; the paper's languages are never capped.
EXTRA_MAX_TRAIN_CHARS = 1_000_000
#: Minimum length of a kept paragraph, in characters; CJK packs more per character.
MIN_CHARS = 30
MIN_CHARS_CJK = 8
_CJK = {"zh", "ja", "ko"}
#: A paragraph is kept only if langid.py gives its language at least this probability: short
#: technical lines (menu paths, formula examples) are where identifiers disagree.
LANGID_MIN_PROB = 0.9999
#: Letters (str.isalpha) must be at least this share of the non-space characters (drops formulas, code).
MIN_LETTER_SHARE = 0.6
#: In zh/ja/ko, Latin letters (product, command and file names) must be below this share of the letters.
MAX_LATIN_SHARE_CJK = 0.5
#: ... and from this share on, langdetect must agree too: n-gram identifiers misread CJK prose
#: that quotes many Latin names, and langdetect is the one the paper used (it is otherwise kept
#: out of the build, so that the tests can use it as an independent check).
SECOND_OPINION_LATIN_SHARE_CJK = 0.3
#: In ja, kana must be at least this share of the kana + Chinese characters: Japanese prose carries
#: its grammar in kana, and a string of kanji compounds cannot be told from Chinese.
MIN_KANA_SHARE_JA = 0.2
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


_PRODUCT = re.compile(r"\$\[officename\]|%PRODUCTNAME")
_PRODUCT_VERSION = re.compile(r"\$\[officeversion\]|%PRODUCTVERSION")
#: Run-time arguments of UI strings ($(ARG1), %1, %s, $1, {0}, %FOO): a string with one is dropped.
_ARGUMENT = re.compile(r"\$\(\w+\)|%\d|%[sdS]\b|\$\d|\{\w*\}|%[A-Z][A-Z_]+%?|\$\w+\$")
#: Keyboard mnemonics of UI strings: "(_A)", "(~A)" after CJK labels, "_" or "~" before a letter.
_MNEMONIC_SUFFIX = re.compile(r"[(（][_~]\w[)）]")
_MNEMONIC = re.compile(r"(?<!\w)[_~](?=\w)|~")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")


def clean_text(text: str) -> str:
    """Entities resolved, product-name placeholders filled, whitespace collapsed, Unicode NFC."""
    text = html.unescape(text)
    text = _PRODUCT.sub("LibreOffice", text)
    text = _PRODUCT_VERSION.sub("7.4", text)
    text = _SPACE.sub(" ", text).strip()
    return unicodedata.normalize("NFC", text)


def clean_ui_text(text: str) -> str:
    """A UI string as prose: mnemonics removed; ``""`` if it has a run-time argument placeholder."""
    text = _MNEMONIC_SUFFIX.sub("", text)
    text = _MNEMONIC.sub("", text)
    text = clean_text(text)
    return "" if _ARGUMENT.search(text) or "<" in text else text


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
    """``"valid"`` for VALID_PERCENT % of help pages (VALID_PERCENT_UI % of UI pages,
    VALID_PERCENT_BOOKS % of the books' pages), by a hash of the path."""
    digest = hashlib.sha256(page.encode()).digest()
    if page.startswith("l10n/"):
        percent = VALID_PERCENT_UI
    elif page.startswith(BOOK_PREFIXES):
        percent = VALID_PERCENT_BOOKS
    else:
        percent = VALID_PERCENT
    return "valid" if int.from_bytes(digest[:4], "big") % 100 < percent else "train"


class _BookParser(HTMLParser):
    """Collects the text of every paragraph of a DocBook XHTML page (``<div class="para">`` in
    the handbook's Publican output, ``<p>`` in the other books), in the order the paragraphs
    open; a paragraph nested in another one is its own paragraph, and program listings and
    screens (``<pre>``) are skipped. Each piece of text records whether it is inside a link."""

    def __init__(self, tag: str, cls: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.tag, self.cls = tag, cls
        self.paragraphs: list[list[tuple[str, bool]]] = []  # (text, inside a link)
        self._stack: list[tuple[str, int | None, bool]] = []  # (tag, paragraph index, skip)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        if self._stack and self._stack[-1][2]:  # inside a program listing: no paragraphs
            self._stack.append((tag, None, True))
            return
        classes = set((dict(attrs).get("class") or "").split())
        index = None
        if tag == self.tag and (self.cls is None or self.cls in classes):
            index = len(self.paragraphs)
            self.paragraphs.append([])
        self._stack.append((tag, index, tag == "pre"))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:  # tolerate unclosed tags
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        in_link = False
        for tag, index, skip in reversed(self._stack):
            if skip:
                return
            if index is not None:
                self.paragraphs[index].append((data, in_link))
                return
            in_link = in_link or tag == "a"


_LINKS = re.compile("\x00+")


def _book_paragraphs(path: Path, book: str) -> list[tuple[str, str, str]]:
    """``(paragraph id, clean text, skeleton)``: the skeleton has every link's text replaced by
    one placeholder, so that an untranslated paragraph whose cross-references were translated
    ("see Sección 1.5.9, “Alias de órdenes”") still equals its English skeleton."""
    parser = _BookParser("div", "para") if book == "handbook" else _BookParser("p", None)
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    out = []
    for k, parts in enumerate(parser.paragraphs):
        skeleton = "".join("\x00" if link else text for text, link in parts)
        out.append((f"p{k}", clean_text("".join(text for text, _ in parts)), clean_text(_LINKS.sub("\x00", skeleton))))
    return out


def extract_book_page(path: Path, book: str = "handbook") -> list[tuple[str, str]]:
    """``(paragraph id, clean text)`` of one page of a Debian book (``"handbook"``,
    ``"reference"`` or ``"install"``); the id is the paragraph's position (``p0``, ``p1``, ...):
    every translation is built from the same DocBook source, so positions align across languages
    (``build`` checks the count against English)."""
    return [(pid, text) for pid, text, _ in _book_paragraphs(path, book)]


def read_mo(path: Path) -> dict[str, str]:
    """``"context\\x04msgid" -> msgstr`` of a gettext .mo file (header and plurals' extra forms dropped)."""
    data = path.read_bytes()
    endian = "<" if struct.unpack("<I", data[:4])[0] == 0x950412DE else ">"
    _, n, orig, trans = struct.unpack(endian + "4I", data[4:20])
    out = {}
    for i in range(n):
        olen, ooff = struct.unpack(endian + "2I", data[orig + 8 * i : orig + 8 * i + 8])
        tlen, toff = struct.unpack(endian + "2I", data[trans + 8 * i : trans + 8 * i + 8])
        msgid = data[ooff : ooff + olen].decode("utf-8", "replace").split("\x00")[0]
        msgstr = data[toff : toff + tlen].decode("utf-8", "replace").split("\x00")[0]
        if msgid:
            out[msgid] = msgstr
    return out


def l10n_pages(root: Path) -> dict[str, list[tuple[str, str, str]]]:
    """UI catalogues of a libreoffice-l10n package as pages: one per dialog (the part of the
    message context before "|"), or per catalogue for plain resource strings.

    Returns ``page -> [(paragraph id = message context, English msgid, translation), ...]``.
    """
    pages: dict[str, list[tuple[str, str, str]]] = {}
    for mo in sorted(root.glob("usr/lib/libreoffice/program/resource/*/LC_MESSAGES/*.mo")):
        for key, msgstr in read_mo(mo).items():
            ctxt, _, msgid = key.rpartition("\x04")
            group = ctxt.split("|")[0] if "|" in ctxt else "strings"
            pages.setdefault(f"l10n/{mo.stem}/{group}", []).append((ctxt or msgid, msgid, msgstr))
    return pages


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


_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


def _mixed(lang: str, text: str) -> bool:
    """Too few letters (formulas, code), or a CJK paragraph dominated by Latin-script names."""
    chars = [c for c in text if not c.isspace()]
    letters = [c for c in chars if c.isalpha()]
    if len(letters) < MIN_LETTER_SHARE * len(chars):
        return True
    if lang in _CJK:
        latin = sum(1 for c in letters if _LATIN.match(c))
        if latin >= MAX_LATIN_SHARE_CJK * len(letters):
            return True
        if latin >= SECOND_OPINION_LATIN_SHARE_CJK * len(letters) and detect_language(text) != lang:
            return True
    if lang == "ja":
        kana = len(_KANA.findall(text))
        han = sum(1 for c in text if is_han(c))
        return kana < MIN_KANA_SHARE_JA * (kana + han)
    return False


def _langid_agrees(lang: str, text: str) -> bool:
    probs = langid_probabilities(text)
    accepted = set(_LANGID_ALIASES.get(lang, {lang}))
    # langid.py calls Chinese with 「」 quotes Japanese; Japanese prose always has kana.
    if lang == "zh" and not _KANA.search(text):
        accepted.add("ja")
    return sum(probs.get(code, 0.0) for code in accepted) >= LANGID_MIN_PROB


def _keep(lang: str, text: str, english: str | None, seen: set[str], counts: Counts) -> bool:
    if len(text) < (MIN_CHARS_CJK if lang in _CJK else MIN_CHARS):
        counts.drop(lang, "short")
    elif lang != "en" and (english is None or text == english):
        counts.drop(lang, "untranslated" if english is not None else "not_in_english")
    elif text in seen:
        counts.drop(lang, "duplicate")
    elif _mixed(lang, text):
        counts.drop(lang, "mixed_or_symbols")
    elif not _langid_agrees(lang, text):
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
    l10n: bool = True,
    books: bool = True,
    log=print,
) -> Counts:
    """Download, extract, clean and write the embedded corpus; returns the counts.

    Help pages come first, then (``l10n=True``) the UI catalogues of ``libreoffice-l10n-*``, whose
    English side is the msgid, then (``books=True``) the pages of three Debian books: the
    Administrator's Handbook, the Reference and the Installation Guide. All are split by page,
    and duplicates are dropped across all.
    """
    languages = list(dict.fromkeys(["en", *languages]))
    unknown = [lang for lang in languages if lang not in HELP_PACKAGES]
    if unknown:
        raise LapelensError(f"no LibreOffice help package for {unknown}; choose from {sorted(HELP_PACKAGES)}")
    sources: list[tuple[str, str]] = []  # (package, version)
    roots: dict[str, Path] = {}
    ui: dict[str, dict[str, list[tuple[str, str, str]]]] = {}  # lang -> l10n page -> entries
    for lang in languages:
        package = f"libreoffice-help-{HELP_PACKAGES[lang]}"
        log(f"fetching {package}")
        root, version = fetch_package(package, work_dir)
        sources.append((package, version))
        roots[lang] = help_dir(root, lang)
        if l10n and lang != "en":  # English is the source language of the UI: no l10n package
            package = f"libreoffice-l10n-{HELP_PACKAGES[lang]}"
            log(f"fetching {package}")
            root, version = fetch_package(package, work_dir)
            sources.append((package, version))
            ui[lang] = l10n_pages(root)

    # book -> lang -> page -> path; pages are named as in English
    book_pages: dict[str, dict[str, dict[str, Path]]] = {}
    if books:
        for book, package, folder, dirs in (
            ("handbook", HANDBOOK_PACKAGE, "debian-handbook/html", HANDBOOK_DIRS),
            ("install", INSTALL_PACKAGE, INSTALL_PACKAGE, INSTALL_DIRS),
        ):  # one package, one folder per language
            log(f"fetching {package}")
            root, version = fetch_package(package, work_dir)
            sources.append((package, version))
            html_dir = root / "usr/share/doc" / folder
            book_pages[book] = {
                lang: {p.name: p for p in (html_dir / dirs[lang]).glob("*.html")} for lang in languages if lang in dirs
            }
        book_pages["reference"] = {}
        for lang in languages:
            if lang in REFERENCE_PACKAGES:
                package = f"debian-reference-{REFERENCE_PACKAGES[lang]}"
                log(f"fetching {package}")
                root, version = fetch_package(package, work_dir)
                sources.append((package, version))
                suffix = f".{REFERENCE_PACKAGES[lang]}.html"
                book_pages["reference"][lang] = {
                    p.name.removesuffix(suffix) + ".html": p
                    for p in (root / "usr/share/debian-reference").glob(f"*{suffix}")
                }

    en_dir = roots["en"]
    pages = sorted(p.relative_to(en_dir).as_posix() for p in (en_dir / "text").rglob("*.html"))
    ui_pages = sorted({page for by_page in ui.values() for page in by_page})
    log(f"{len(pages)} help pages, {len(ui_pages)} UI dialogs/catalogues")
    counts = Counts()
    seen: dict[str, set[str]] = {lang: set() for lang in languages}
    # docs[lang][split] = [{"page", "ids", "paragraphs"}]
    docs: dict[str, dict[str, list[dict]]] = {lang: {"train": [], "valid": []} for lang in languages}

    def add(lang: str, page: str, paragraphs: Iterable[tuple[str, str]], english: dict[str, str]) -> None:
        ids, texts = [], []
        for pid, text in paragraphs:
            if _keep(lang, text, english.get(pid), seen[lang], counts):
                ids.append(pid)
                texts.append(text)
        if texts:
            docs[lang][page_split(page)].append({"page": page, "ids": ids, "paragraphs": texts})

    for n, page in enumerate(pages):
        if n % 250 == 0:
            log(f"  help page {n}/{len(pages)}")
        english = dict(extract_page(en_dir / page))
        for lang in languages:
            path = roots[lang] / page
            if lang == "en":
                add(lang, page, english.items(), english)
            elif path.exists():
                add(lang, page, extract_page(path), english)
            else:
                counts.drop(lang, "page_missing")
    for page in ui_pages:
        english: dict[str, str] = {}
        for by_page in ui.values():
            for pid, msgid, _ in by_page.get(page, ()):
                english.setdefault(pid, clean_ui_text(msgid))
        for lang in languages:
            if lang == "en":
                add(lang, page, sorted(english.items()), english)
            else:
                entries = sorted((pid, clean_ui_text(msgstr)) for pid, _, msgstr in ui[lang].get(page, ()))
                add(lang, page, entries, english)

    for book, by_lang in book_pages.items():
        log(f"{len(by_lang['en'])} {book} pages")
        for page in sorted(by_lang["en"]):
            english_rows = _book_paragraphs(by_lang["en"][page], book)
            english = {pid: text for pid, text, _ in english_rows}
            for lang in languages:
                if page not in by_lang.get(lang, {}):
                    continue
                rows = _book_paragraphs(by_lang[lang][page], book)
                if len(rows) != len(english_rows):  # positions would not align with English
                    for _ in rows:
                        counts.drop(lang, "misaligned")
                    continue
                paragraphs = []
                for (pid, text, skeleton), (_, _, english_skeleton) in zip(rows, english_rows):
                    if lang != "en" and skeleton == english_skeleton and text != english[pid]:
                        counts.drop(lang, "untranslated_but_links")
                    else:
                        paragraphs.append((pid, text))
                add(lang, f"{book}/{page}", paragraphs, english)

    for lang in languages:
        if lang not in PAPER_LANGUAGES:
            docs[lang]["train"] = _cap(docs[lang]["train"], EXTRA_MAX_TRAIN_CHARS, counts.dropped.setdefault(lang, {}))

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
        "sources": [{"package": p, "version": v} for p, v in sources],
        "languages": languages,
        "settings": {
            "valid_percent": VALID_PERCENT,
            "valid_percent_ui": VALID_PERCENT_UI,
            "valid_percent_books": VALID_PERCENT_BOOKS,
            "extra_max_train_chars": EXTRA_MAX_TRAIN_CHARS,
            "min_chars": MIN_CHARS,
            "min_chars_cjk": MIN_CHARS_CJK,
            "langid_min_prob": LANGID_MIN_PROB,
            "min_letter_share": MIN_LETTER_SHARE,
            "max_latin_share_cjk": MAX_LATIN_SHARE_CJK,
            "second_opinion_latin_share_cjk": SECOND_OPINION_LATIN_SHARE_CJK,
            "min_kana_share_ja": MIN_KANA_SHARE_JA,
        },
        "counts": counts.kept,
        "dropped": counts.dropped,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    _write_notice(out_dir, sources, work_dir)
    return counts


def _cap(rows: list[dict], max_chars: int, dropped: dict[str, int]) -> list[dict]:
    """Whole pages, taken in the order of a hash of their path, up to ``max_chars``; page order kept."""
    by_hash = sorted(rows, key=lambda r: hashlib.sha256(r["page"].encode()).digest())
    keep, total = set(), 0
    for row in by_hash:
        size = len("\n".join(row["paragraphs"]))
        if total + size > max_chars:
            dropped["capped"] = dropped.get("capped", 0) + len(row["paragraphs"])
            continue
        keep.add(row["page"])
        total += size
    return [r for r in rows if r["page"] in keep]


#: Where Debian keeps the licence texts that its copyright files point to.
COMMON_LICENSES = Path("/usr/share/common-licenses")


def _write_notice(out_dir: Path, sources: list[tuple[str, str]], work_dir: Path) -> None:
    """NOTICE: what the data is, every source package and version, copyright lines and licences:
    MPL-2.0 for the LibreOffice text; the books' own debian/copyright for theirs (the handbook's
    carries the full CC-BY-SA-3.0 text), and GPL-2 (the Reference's GPL-2.0+, the Installation
    Guide's GPL-2)."""
    licence = COMMON_LICENSES / "MPL-2.0"
    if not licence.exists():
        raise LapelensError(f"{licence} not found (Debian package base-files); it is copied into NOTICE")
    libreoffice = [(p, v) for p, v in sources if p.startswith("libreoffice-")]
    handbook = [(p, v) for p, v in sources if p == HANDBOOK_PACKAGE]
    reference = [(p, v) for p, v in sources if p.startswith("debian-reference-")]
    install = [(p, v) for p, v in sources if p == INSTALL_PACKAGE]
    copyright_file = work_dir / f"x_{libreoffice[0][0]}" / "usr/share/doc" / libreoffice[0][0] / "copyright"
    holders = ""
    if copyright_file.exists():  # the "Files: *" stanza names the copyright holders
        stanza = copyright_file.read_text().split("\n\n")
        main = next((b for b in stanza if b.startswith("Files: *")), "")
        holders = "\n".join(line for line in main.splitlines() if not line.startswith(" ") or "Copyright" in line)
        holders = "\n".join(line.strip() for line in holders.splitlines() if "Copyright" in line or "(c)" in line)
    text = [
        "lapelens embedded corpus",
        "========================",
        "",
        "The files in this folder (mono/*.jsonl.xz, parallel.*.txt.xz, manifest.json) are text",
        "extracted from Debian packages, cleaned and split by lapelens/corpus_build.py",
        "(scripts/build_corpus.py). Every paragraph records its source page: pages named",
        '"handbook/..." come from the Debian Administrator\'s Handbook, pages named "reference/..."',
        'from the Debian Reference, pages named "install/..." from the Debian Installation Guide,',
        "all others from LibreOffice.",
        "",
        "1. LibreOffice help and user-interface translations (pages not starting with",
        '   "handbook/", "reference/" or "install/"). A modified form of the source files,',
        "   distributed under the Mozilla Public License 2.0 (full text at the end). The source code",
        "   form is available from the packages",
        "   listed here (`apt-get source libreoffice`) and from https://git.libreoffice.org/help and",
        "   https://git.libreoffice.org/translations.",
        "",
        "   Source packages (Debian bookworm, License: MPL-2.0):",
        *[f"     {package} {version}" for package, version in libreoffice],
        "",
        "   Copyright (from the packages' debian/copyright, Files: *):",
        *[f"     {line}" for line in holders.splitlines()],
        "",
    ]
    books = [  # (packages, the section's lines before the package's debian/copyright)
        (handbook, [
            "2. The Debian Administrator's Handbook by Raphael Hertzog and Roland Mas, and its",
            '   translations (pages starting with "handbook/"): text extracted from the HTML of',
            *[f"     {p} {v}" for p, v in handbook],
            "   licensed GPL-2.0+ or CC-BY-SA-3.0; used here under CC-BY-SA-3.0 (the extracted text is",
            "   shared under the same licence). Source: https://debian-handbook.info/ and",
            "   `apt-get source debian-handbook`.",
        ]),
        (reference, [
            "3. Debian Reference by Osamu Aoki, and its translations (pages starting with",
            '   "reference/"): text extracted from the HTML of',
            *[f"     {p} {v}" for p, v in reference],
            "   licensed GPL-2.0+ (GPL-2 text at the end); the extracted text is under the same licence.",
            "   Source: https://www.debian.org/doc/manuals/debian-reference/ and",
            "   `apt-get source debian-reference`.",
        ]),
        (install, [
            "4. Debian GNU/Linux Installation Guide and its translations (pages starting with",
            '   "install/"): text extracted from the HTML of',
            *[f"     {p} {v}" for p, v in install],
            "   licensed GPL-2 (text at the end); the extracted text is under the same licence.",
            "   Source: https://www.debian.org/releases/bookworm/installmanual and",
            "   `apt-get source installation-guide`.",
        ]),
    ]
    for packages, lines in books:
        if packages:
            package = packages[0][0]
            copyright_path = work_dir / f"x_{package}" / "usr/share/doc" / package / "copyright"
            text += [*lines, f"   The debian/copyright of {package} follows verbatim.", "",
                     copyright_path.read_text() if copyright_path.exists() else f"({copyright_path} not found)", ""]
    text += ["=" * 78, "", "Mozilla Public License 2.0 (for part 1)", "", licence.read_text()]
    if reference or install:
        text += ["=" * 78, "", "GNU General Public License, version 2 (for parts 3 and 4)", "",
                 (COMMON_LICENSES / "GPL-2").read_text()]
    (out_dir / "NOTICE").write_text("\n".join(text))


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
