"""``lapelens ses``: sentence-embedding similarity per layer (Fig. 6) and dominance (Fig. 7, Eq. 6)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lapelens.constants import DOMINANCE_HTML, EMBEDDED, SES_HTML
from lapelens.errors import LapelensError


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lapelens.evaluate.similarity import DEFAULT_BATCH_SIZE, VECTORS

    parser = subparsers.add_parser(
        "ses",
        help="Sentence-embedding similarity between aligned texts per layer, and language dominance.",
        description="Embed aligned texts (mean residual stream after each block, separator excluded), then "
        "write the mean cosine similarity of every language pair per layer (ses.csv, Fig. 6) and the "
        "similarity to each target language after the shift h_k - v_k + v_c (dominance.csv, Fig. 7), "
        "with HTML figures.",
    )
    parser.add_argument("--model", default=EMBEDDED, help="Hub name, local HF folder, or 'embedded' (default).")
    parser.add_argument("--parallel", default=EMBEDDED,
                        help="'embedded' (default), 'flores', or a CSV file with one column per language "
                        "(header: language codes; a column named 'id' becomes the row index).")
    parser.add_argument("--split", default="valid",
                        help="Split of the parallel corpus (default: valid, text the embedded model was not trained on).")
    parser.add_argument("--languages", help="Comma-separated language codes (default: en,zh,fr,es,vi,id,ja; "
                        "for a CSV file, all its columns).")
    parser.add_argument("--n-texts", type=int, default=200,
                        help="Aligned texts to use, drawn at random (seeded) and kept in corpus order (200).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the text sample (0).")
    parser.add_argument("--vectors", choices=VECTORS, default="heldout",
                        help="Where the language vectors v of Eq. 6 are fit: 'heldout' (default: on one half of "
                        "the texts, scored on the other, then swapped) or 'all' (on every text).")
    parser.add_argument("--neurons", type=Path,
                        help="A neuron set (lapelens folder or official .pth file) to plot its neurons per layer "
                        "beside the SES.")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="Tokens kept per text (default: the model's context minus the separator).")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"Texts per forward pass ({DEFAULT_BATCH_SIZE}).")
    parser.add_argument("--out", type=Path, required=True, help="Folder to write the CSVs, JSON and HTML figures to.")
    parser.add_argument("--device", default="cpu", help="Torch device (default: cpu).")
    parser.add_argument("--quiet", action="store_true", help="No progress bars and no tables on stdout.")
    parser.set_defaults(func=run)
    return parser


def _read_parallel(args: argparse.Namespace, languages: list[str] | None):
    import pandas as pd

    from lapelens.corpus import load_parallel

    path = Path(args.parallel)
    if args.parallel not in (EMBEDDED, "flores") and path.suffix == ".csv":
        if not path.is_file():
            raise LapelensError(f"Parallel file {path} does not exist.")
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise LapelensError(f"--parallel {path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                                "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
        except pd.errors.EmptyDataError:
            raise LapelensError(f"--parallel {path} is empty: it needs a header of language codes and one row "
                                "per aligned text.") from None
        except pd.errors.ParserError as exc:
            raise LapelensError(f"--parallel {path} is not a readable CSV ({str(exc).splitlines()[0]}).") from None
        if "id" in frame.columns:
            frame = frame.set_index("id")
        if len(frame.columns) < 2:
            raise LapelensError(f"--parallel {path} has {len(frame.columns)} language column(s) "
                                f"({', '.join(map(str, frame.columns)) or 'none'}): it needs one column per language, "
                                "at least two, with language codes as the header.")
        if languages is not None:
            missing = [l for l in languages if l not in frame.columns]
            if missing:
                raise LapelensError(f"--languages {','.join(missing)}: {missing} are not in the parallel data "
                                    f"(--parallel {path} has columns {','.join(map(str, frame.columns))}).")
        if len(frame) == 0:
            raise LapelensError(f"--parallel {path} has a header but no rows of aligned text.")
        return frame
    return load_parallel(args.parallel, split=args.split, languages=languages)


def run(args: argparse.Namespace) -> None:
    import numpy as np

    from lapelens.models import load_model
    from lapelens.neurons import load_neurons
    from lapelens.evaluate.similarity import sentence_embeddings

    languages = [l.strip() for l in args.languages.split(",") if l.strip()] if args.languages else None
    if args.languages is not None and not languages:
        raise LapelensError("--languages is empty: give comma-separated codes such as en,zh,fr.")
    if languages is not None and len(languages) < 2:
        raise LapelensError(f"--languages {','.join(languages)}: SES compares languages, give at least two.")
    if args.n_texts < 2:
        raise LapelensError(f"--n-texts must be at least 2 (similarities are means over aligned texts), got {args.n_texts}.")
    for flag, value in (("--batch-size", args.batch_size), ("--max-tokens", args.max_tokens)):
        if value is not None and value < 1:
            raise LapelensError(f"{flag} must be a positive number, got {value}.")
    frame = _read_parallel(args, languages)
    if args.n_texts > len(frame):
        raise LapelensError(f"--n-texts {args.n_texts} is more than the {len(frame)} aligned texts of "
                            f"{args.parallel!r} ({args.split}): ask for at most {len(frame)}.")
    # A random sample, back in corpus order: the held-out halves then fall on different documents.
    rows = np.sort(np.random.default_rng(args.seed).choice(len(frame), size=args.n_texts, replace=False))
    sample = frame.iloc[rows]
    neurons = load_neurons(args.neurons) if args.neurons is not None else None
    model = load_model(args.model, device=args.device)
    emb = sentence_embeddings(model, sample, languages=languages, batch_size=args.batch_size,
                              max_tokens=args.max_tokens, progress=not args.quiet)
    emb.meta.update(parallel=args.parallel, split=args.split, seed=args.seed)
    ses = emb.similarity(neurons)
    dominance = emb.dominance(args.vectors)
    ses.save(args.out)
    dominance.save(args.out)
    ses.figure().write_html(args.out / SES_HTML)  # plotly.js inline: opens offline
    dominance.figure().write_html(args.out / DOMINANCE_HTML)  # plotly.js inline: opens offline
    if not args.quiet:
        print(f"SES per layer ({len(sample)} texts, {len(emb.languages)} languages, "
              f"{emb.meta['n_truncated']} truncated):")
        print(ses.ses.round(4).to_string())
        print(f"\nDominance (mean SES to each target after h_k - v_k + v_c, v: {args.vectors}):")
        print(dominance.shifted.round(4).to_string())
        print("\nUnshifted (same average without the shift):")
        print(dominance.unshifted.round(4).to_string())
        print("\nControl: shifted, but compared with a non-aligned target text:")
        print(dominance.mismatched.round(4).to_string())
        print(f"\nwrote {args.out}")
