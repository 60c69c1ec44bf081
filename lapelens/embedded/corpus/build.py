"""The corpus build from end to end: fetch every package, extract, filter, split and write
(see the package docstring for the cleaning rules)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from lapelens.constants import PAPER_LANGUAGES
from lapelens.embedded.corpus.extract import book_paragraphs, clean_ui_text, extract_page, l10n_pages
from lapelens.embedded.corpus.fetch import (
    HANDBOOK_DIRS,
    HANDBOOK_PACKAGE,
    HELP_PACKAGES,
    INSTALL_DIRS,
    INSTALL_PACKAGE,
    REFERENCE_PACKAGES,
    fetch_package,
    help_dir,
)
from lapelens.embedded.corpus.filter import (
    EXTRA_MAX_TRAIN_CHARS,
    LANGID_MIN_PROB,
    MAX_LATIN_SHARE_CJK,
    MIN_CHARS,
    MIN_CHARS_CJK,
    MIN_KANA_SHARE_JA,
    MIN_LETTER_SHARE,
    SECOND_OPINION_LATIN_SHARE_CJK,
    Counts,
    cap_pages,
    keep_paragraph,
)
from lapelens.embedded.corpus.write import (
    VALID_PERCENT,
    VALID_PERCENT_BOOKS,
    VALID_PERCENT_UI,
    page_split,
    write_jsonl,
    write_notice,
    write_parallel,
)
from lapelens.errors import LapelensError


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
            if keep_paragraph(lang, text, english.get(pid), seen[lang], counts):
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
            english_rows = book_paragraphs(by_lang["en"][page], book)
            english = {pid: text for pid, text, _ in english_rows}
            for lang in languages:
                if page not in by_lang.get(lang, {}):
                    continue
                rows = book_paragraphs(by_lang[lang][page], book)
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
            docs[lang]["train"] = cap_pages(
                docs[lang]["train"], EXTRA_MAX_TRAIN_CHARS, counts.dropped.setdefault(lang, {})
            )

    out_dir.mkdir(parents=True, exist_ok=True)
    mono = out_dir / "mono"
    mono.mkdir(exist_ok=True)
    for lang in languages:
        counts.kept[lang] = {}
        for split, rows in docs[lang].items():
            write_jsonl(mono / f"{lang}.{split}.jsonl.xz", rows)
            n_par = sum(len(r["paragraphs"]) for r in rows)
            n_chars = sum(len("\n".join(r["paragraphs"])) for r in rows)
            counts.kept[lang][split] = [len(rows), n_par, n_chars]
    write_parallel(out_dir, docs, languages, counts)
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
    write_notice(out_dir, sources, work_dir)
    return counts
