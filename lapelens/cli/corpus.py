"""``lapelens corpus build|show``: (re)build the embedded corpus, or count any corpus's text."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.constants import PAPER_LANGUAGES
from lapelens.corpus import CORPUS_DIR, load_corpus
from lapelens.embedded.corpus.build import build
from lapelens.embedded.corpus.fetch import EXTRA_LANGUAGES
from lapelens.embedded.corpus.write import report


@dataclass(kw_only=True)
class BuildConfig:
    work_dir: Path | None = None
    """Where .deb files are downloaded and unpacked (reused if present; default: a temporary folder)."""
    out: Path | None = None
    """Output folder (default: the package's data/corpus)."""
    languages: tuple[str, ...] | None = None
    """lapelens codes (default: the paper's seven, then de,ru,ko,pt,it)."""
    l10n: bool = True
    """With the LibreOffice UI catalogues (--no-l10n: without)."""
    books: bool = True
    """With the three Debian books: Administrator's Handbook, Reference, Installation Guide (--no-books: without)."""


@dataclass(kw_only=True)
class ShowConfig:
    name: str = field(default="embedded", metadata={"positional": True})
    """embedded (default), wikipedia, or a folder of {lang}.txt / {lang}.jsonl files."""
    languages: tuple[str, ...] | None = None
    """Language codes (default: every language of the corpus)."""
    splits: tuple[str, ...] = ("train", "valid")
    """Splits to count."""
    max_chars: int | None = None
    """Per-language character budget (wikipedia: default 2,000,000; others: no limit)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("corpus", help="build the embedded corpus or show a corpus's size")
    sub = parser.add_subparsers(dest="corpus_command", required=True)

    add_command(
        sub,
        "build",
        BuildConfig,
        run_build,
        help="download LibreOffice help/UI translations and three Debian books; write lapelens/data/corpus/",
        description="Download libreoffice-help-*, libreoffice-l10n-*, debian-handbook, debian-reference-* and "
        "installation-guide-amd64 with apt-get, unpack, extract, clean, split and write the embedded corpus with "
        "its NOTICE; prints the counts it produced.",
    )
    add_command(sub, "show", ShowConfig, run_show, help="documents, paragraphs and characters per language and split")
    parser.set_defaults(func=lambda args: parser.print_help())


def run_build(cfg: BuildConfig) -> None:
    out = cfg.out or CORPUS_DIR
    languages = list(cfg.languages) if cfg.languages else [*PAPER_LANGUAGES, *EXTRA_LANGUAGES]
    options = dict(l10n=cfg.l10n, books=cfg.books)
    if cfg.work_dir is None:
        with tempfile.TemporaryDirectory(prefix="lapelens-corpus-") as tmp:
            counts = build(out, Path(tmp), languages, **options)
    else:
        counts = build(out, cfg.work_dir, languages, **options)
    print(report(counts, out))


def run_show(cfg: ShowConfig) -> None:
    languages = list(cfg.languages) if cfg.languages else None
    print(f"{'lang':6}{'split':7}{'docs':>8}{'paragraphs':>12}{'chars':>12}")
    for split in cfg.splits:
        corpus = load_corpus(cfg.name, split, languages, max_chars=cfg.max_chars)
        for lang, docs in corpus.items():
            paragraphs = sum(doc.count("\n") + 1 for doc in docs)
            chars = sum(len(doc) for doc in docs)
            print(f"{lang:6}{split:7}{len(docs):>8}{paragraphs:>12}{chars:>12}")
