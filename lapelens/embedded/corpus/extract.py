"""Text out of the unpacked packages: LibreOffice help pages (paragraphs by id), UI catalogues
(.mo files, by message context) and the pages of the Debian books (paragraphs by position),
with markup stripped and the text cleaned (``clean_text``, ``clean_ui_text``)."""

from __future__ import annotations

import html
import re
import struct
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

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


def book_paragraphs(path: Path, book: str) -> list[tuple[str, str, str]]:
    """``(paragraph id, clean text, skeleton)`` of one page of a Debian book (``"handbook"``,
    ``"reference"`` or ``"install"``). The id is the paragraph's position (``p0``, ``p1``, ...):
    every translation is built from the same DocBook source, so positions align across languages
    (``build`` checks the count against English). The skeleton has every link's text replaced by
    one placeholder, so that an untranslated paragraph whose cross-references were translated
    ("see Sección 1.5.9, “Alias de órdenes”") still equals its English skeleton."""
    parser = _BookParser("div", "para") if book == "handbook" else _BookParser("p", None)
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    out = []
    for k, parts in enumerate(parser.paragraphs):
        skeleton = "".join("\x00" if link else text for text, link in parts)
        out.append((f"p{k}", clean_text("".join(text for text, _ in parts)), clean_text(_LINKS.sub("\x00", skeleton))))
    return out


def read_mo(path: Path) -> dict[str, str]:
    r"""``"context\x04msgid" -> msgstr`` of a gettext .mo file (header and plurals' extra forms dropped)."""
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
