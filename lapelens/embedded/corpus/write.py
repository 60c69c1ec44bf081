"""Splitting pages into train/valid by a hash of their path, and writing the corpus folder:
``mono/<lang>.<split>.jsonl.xz``, ``parallel.<split>.txt.xz``, ``NOTICE``; ``report`` is the
closing table of counts."""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Iterable
from pathlib import Path

from lapelens.constants import PAPER_LANGUAGES
from lapelens.embedded.corpus.fetch import HANDBOOK_PACKAGE, INSTALL_PACKAGE
from lapelens.embedded.corpus.filter import Counts
from lapelens.errors import LapelensError

#: The books, by the prefix of their pages.
BOOK_PREFIXES = ("handbook/", "reference/", "install/")
#: Share of help pages (by hash of the page path) that go to ``valid``. Fixed since the first
#: release: a model trained on an earlier build's train split has never seen a valid page.
VALID_PERCENT = 6
#: The same for UI dialogs/catalogues (added in the second build, so free to choose): a larger
#: share gives the languages with little help text (zh, ja) a valid split of >= 50 k characters.
VALID_PERCENT_UI = 40
#: The same for the pages of the three Debian books (added in the third build).
VALID_PERCENT_BOOKS = 8


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


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    # xz: a quarter smaller than gzip on this text; no timestamp inside, so rebuilds are byte-identical.
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    path.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


#: Where Debian keeps the licence texts that its copyright files point to.
COMMON_LICENSES = Path("/usr/share/common-licenses")


def write_notice(out_dir: Path, sources: list[tuple[str, str]], work_dir: Path) -> None:
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
        "extracted from Debian packages, cleaned and split by lapelens/embedded/corpus/",
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
        (
            handbook,
            [
                "2. The Debian Administrator's Handbook by Raphael Hertzog and Roland Mas, and its",
                '   translations (pages starting with "handbook/"): text extracted from the HTML of',
                *[f"     {p} {v}" for p, v in handbook],
                "   licensed GPL-2.0+ or CC-BY-SA-3.0; used here under CC-BY-SA-3.0 (the extracted text is",
                "   shared under the same licence). Source: https://debian-handbook.info/ and",
                "   `apt-get source debian-handbook`.",
            ],
        ),
        (
            reference,
            [
                "3. Debian Reference by Osamu Aoki, and its translations (pages starting with",
                '   "reference/"): text extracted from the HTML of',
                *[f"     {p} {v}" for p, v in reference],
                "   licensed GPL-2.0+ (GPL-2 text at the end); the extracted text is under the same licence.",
                "   Source: https://www.debian.org/doc/manuals/debian-reference/ and",
                "   `apt-get source debian-reference`.",
            ],
        ),
        (
            install,
            [
                "4. Debian GNU/Linux Installation Guide and its translations (pages starting with",
                '   "install/"): text extracted from the HTML of',
                *[f"     {p} {v}" for p, v in install],
                "   licensed GPL-2 (text at the end); the extracted text is under the same licence.",
                "   Source: https://www.debian.org/releases/bookworm/installmanual and",
                "   `apt-get source installation-guide`.",
            ],
        ),
    ]
    for packages, lines in books:
        if packages:
            package = packages[0][0]
            copyright_path = work_dir / f"x_{package}" / "usr/share/doc" / package / "copyright"
            text += [
                *lines,
                f"   The debian/copyright of {package} follows verbatim.",
                "",
                copyright_path.read_text() if copyright_path.exists() else f"({copyright_path} not found)",
                "",
            ]
    text += ["=" * 78, "", "Mozilla Public License 2.0 (for part 1)", "", licence.read_text()]
    if reference or install:
        text += [
            "=" * 78,
            "",
            "GNU General Public License, version 2 (for parts 3 and 4)",
            "",
            (COMMON_LICENSES / "GPL-2").read_text(),
        ]
    (out_dir / "NOTICE").write_text("\n".join(text))


def write_parallel(out_dir: Path, docs: dict, languages: list[str], counts: Counts) -> None:
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
    for split, (rows, _full, _) in counts.kept.get("_parallel", {}).items():
        lines.append(f"parallel {split}: {rows} paragraphs kept in all of {', '.join(PAPER_LANGUAGES)}")
    for lang, reasons in counts.dropped.items():
        lines.append(f"dropped {lang}: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    lines.append(f"{out_dir}: {size / 1e6:.2f} MB on disk")
    return "\n".join(lines)
