"""``lapelens ses``: sentence-embedding similarity per layer (Fig. 6) and dominance (Fig. 7, Eq. 6)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.cli._options import ModelOptions, positive
from lapelens.constants import DOMINANCE_HTML, EMBEDDED, SES_HTML
from lapelens.corpus import load_parallel
from lapelens.errors import LapelensError
from lapelens.evaluate.similarity import DEFAULT_BATCH_SIZE, VECTORS, sentence_embeddings
from lapelens.models import load_model
from lapelens.neurons import load_neurons


@dataclass(kw_only=True)
class SesConfig(ModelOptions):
    parallel: str = EMBEDDED
    """'embedded', 'flores', or a CSV file with one column per language (header: language codes; a column named
    'id' becomes the row index)."""
    split: str = "valid"
    """Split of the parallel corpus (valid: text the embedded model was not trained on)."""
    languages: tuple[str, ...] | None = None
    """Language codes (default: en,zh,fr,es,vi,id,ja; for a CSV file, all its columns)."""
    n_texts: int = 200
    """Aligned texts to use, drawn at random (seeded) and kept in corpus order."""
    seed: int = 0
    """Seed of the text sample."""
    vectors: str = field(default="heldout", metadata={"choices": VECTORS})
    """Where the language vectors v of Eq. 6 are fit: 'heldout' (on one half of the texts, scored on the other,
    then swapped) or 'all' (on every text)."""
    neurons: Path | None = None
    """A neuron set (lapelens folder or official .pth file) to plot its neurons per layer beside the SES."""
    max_tokens: int | None = None
    """Tokens kept per text (default: the model's context minus the separator)."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Texts per forward pass."""
    out: Path
    """Folder to write the CSVs, JSON and HTML figures to."""
    quiet: bool = False
    """No progress bars and no tables on stdout."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers, "ses", SesConfig, run,
        help="Sentence-embedding similarity between aligned texts per layer, and language dominance.",
        description="Embed aligned texts (mean residual stream after each block, separator excluded), then "
        "write the mean cosine similarity of every language pair per layer (ses.csv, Fig. 6) and the "
        "similarity to each target language after the shift h_k - v_k + v_c (dominance.csv, Fig. 7), "
        "with HTML figures.",
    )


def _read_parallel(cfg: SesConfig, languages: list[str] | None):
    import pandas as pd

    path = Path(cfg.parallel)
    if cfg.parallel not in (EMBEDDED, "flores") and path.suffix == ".csv":
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
    return load_parallel(cfg.parallel, split=cfg.split, languages=languages)


def run(cfg: SesConfig) -> None:
    import numpy as np

    languages = list(cfg.languages) if cfg.languages else None
    if languages is not None and len(languages) < 2:
        raise LapelensError(f"--languages {','.join(languages)}: SES compares languages, give at least two.")
    if cfg.n_texts < 2:
        raise LapelensError(f"--n-texts must be at least 2 (similarities are means over aligned texts), got {cfg.n_texts}.")
    for flag, value in (("--batch-size", cfg.batch_size), ("--max-tokens", cfg.max_tokens)):
        positive(value, flag)
    frame = _read_parallel(cfg, languages)
    if cfg.n_texts > len(frame):
        raise LapelensError(f"--n-texts {cfg.n_texts} is more than the {len(frame)} aligned texts of "
                            f"{cfg.parallel!r} ({cfg.split}): ask for at most {len(frame)}.")
    # A random sample, back in corpus order: the held-out halves then fall on different documents.
    rows = np.sort(np.random.default_rng(cfg.seed).choice(len(frame), size=cfg.n_texts, replace=False))
    sample = frame.iloc[rows]
    neurons = load_neurons(cfg.neurons) if cfg.neurons is not None else None
    model = load_model(cfg.model, device=cfg.device)
    emb = sentence_embeddings(model, sample, languages=languages, batch_size=cfg.batch_size,
                              max_tokens=cfg.max_tokens, progress=not cfg.quiet)
    emb.meta.update(parallel=cfg.parallel, split=cfg.split, seed=cfg.seed)
    ses = emb.similarity(neurons)
    dominance = emb.dominance(cfg.vectors)
    ses.save(cfg.out)
    dominance.save(cfg.out)
    ses.figure().write_html(cfg.out / SES_HTML)  # plotly.js inline: opens offline
    dominance.figure().write_html(cfg.out / DOMINANCE_HTML)  # plotly.js inline: opens offline
    if not cfg.quiet:
        print(f"SES per layer ({len(sample)} texts, {len(emb.languages)} languages, "
              f"{emb.meta['n_truncated']} truncated):")
        print(ses.ses.round(4).to_string())
        print(f"\nDominance (mean SES to each target after h_k - v_k + v_c, v: {cfg.vectors}):")
        print(dominance.shifted.round(4).to_string())
        print("\nUnshifted (same average without the shift):")
        print(dominance.unshifted.round(4).to_string())
        print("\nControl: shifted, but compared with a non-aligned target text:")
        print(dominance.mismatched.round(4).to_string())
        print(f"\nwrote {cfg.out}")
