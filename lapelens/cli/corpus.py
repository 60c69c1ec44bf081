"""``lapelens corpus build|show``: (re)build the embedded corpus, or count any corpus's text."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("corpus", help="build the embedded corpus or show a corpus's size")
    sub = parser.add_subparsers(dest="corpus_command", required=True)

    build = sub.add_parser(
        "build",
        help="download LibreOffice help/UI translations and three Debian books; write lapelens/data/corpus/",
        description="Download libreoffice-help-*, libreoffice-l10n-*, debian-handbook, debian-reference-* and "
        "installation-guide-amd64 with apt-get, unpack, extract, clean, split and write the embedded corpus with "
        "its NOTICE; prints the counts it produced.",
    )
    build.add_argument("--work-dir", type=Path, default=None,
                       help="where .deb files are downloaded and unpacked (reused if present; default: a temp dir)")
    build.add_argument("--out", type=Path, default=None, help="output folder (default: the package's data/corpus)")
    build.add_argument("--languages", nargs="+", default=None,
                       help="lapelens codes (default: the paper's seven, then de ru ko pt it)")
    build.add_argument("--no-l10n", action="store_true", help="without the LibreOffice UI catalogues")
    build.add_argument("--no-books", action="store_true",
                       help="without the three Debian books (Administrator's Handbook, Reference, Installation Guide)")
    build.set_defaults(func=run_build)

    show = sub.add_parser("show", help="documents, paragraphs and characters per language and split")
    show.add_argument("name", nargs="?", default="embedded",
                      help="embedded (default), wikipedia, or a folder of {lang}.txt / {lang}.jsonl files")
    show.add_argument("--languages", nargs="+", default=None,
                      help="language codes, space-separated (default: every language of the corpus)")
    show.add_argument("--splits", nargs="+", default=["train", "valid"], help="splits to count (default: train valid)")
    show.add_argument("--max-chars", type=int, default=None,
                      help="per-language character budget (wikipedia: default 2,000,000; others: no limit)")
    show.set_defaults(func=run_show)
    parser.set_defaults(func=lambda args: parser.print_help())


def run_build(args: argparse.Namespace) -> None:
    from lapelens.constants import PAPER_LANGUAGES
    from lapelens.corpus import CORPUS_DIR
    from lapelens.embedded.corpus.build import build
    from lapelens.embedded.corpus.fetch import EXTRA_LANGUAGES
    from lapelens.embedded.corpus.write import report

    out = args.out or CORPUS_DIR
    languages = args.languages or [*PAPER_LANGUAGES, *EXTRA_LANGUAGES]
    options = dict(l10n=not args.no_l10n, books=not args.no_books)
    if args.work_dir is None:
        with tempfile.TemporaryDirectory(prefix="lapelens-corpus-") as tmp:
            counts = build(out, Path(tmp), languages, **options)
    else:
        counts = build(out, args.work_dir, languages, **options)
    print(report(counts, out))


def run_show(args: argparse.Namespace) -> None:
    from lapelens.corpus import load_corpus

    print(f"{'lang':6}{'split':7}{'docs':>8}{'paragraphs':>12}{'chars':>12}")
    for split in args.splits:
        corpus = load_corpus(args.name, split, args.languages, max_chars=args.max_chars)
        for lang, docs in corpus.items():
            paragraphs = sum(doc.count("\n") + 1 for doc in docs)
            chars = sum(len(doc) for doc in docs)
            print(f"{lang:6}{split:7}{len(docs):>8}{paragraphs:>12}{chars:>12}")
