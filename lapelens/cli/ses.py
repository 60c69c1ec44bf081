"""``lapelens ses``: sentence-embedding similarity per layer (Fig. 6) and dominance (Fig. 7), measured so that
they carry signal (standardized cosines, mismatched control, retrieval, bootstrap intervals)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lapelens.cli._config import add_command
from lapelens.cli._options import ModelOptions, positive
from lapelens.constants import DOMINANCE_HTML, EMBEDDED, SES_HTML
from lapelens.corpus import load_parallel
from lapelens.errors import LapelensError
from lapelens.evaluate.embeddings import DEFAULT_BATCH_SIZE, SentenceEmbeddings, sentence_embeddings
from lapelens.evaluate.measures import DEFAULT_N_BOOT, MEASURES, VECTORS
from lapelens.lock import OUTPUT
from lapelens.models import load_model
from lapelens.neurons import load_neurons


@dataclass(kw_only=True)
class SesConfig(ModelOptions):
    parallel: str = EMBEDDED
    """'embedded', 'flores', or a CSV file with one column per language (header: language codes; a column named
    'id' becomes the row index unless --languages names id, Indonesian)."""
    split: str = "valid"
    """Split of the parallel corpus (valid: text the embedded model was not trained on)."""
    languages: tuple[str, ...] | None = None
    """Language codes (default: en,zh,fr,es,vi,id,ja; for a CSV file, all its columns)."""
    n_texts: int = 200
    """Aligned texts to use, drawn at random (seeded) and kept in corpus order."""
    seed: int = 0
    """Seed of the text sample and of the bootstrap."""
    measure: str = field(default="standardized", metadata={"choices": MEASURES})
    """How two texts are compared: 'raw' cosine (dominated by the mean all texts share), 'centered' (each
    language's mean subtracted) or 'standardized' (centred, then each dimension divided by its spread)."""
    vectors: str = field(default="heldout", metadata={"choices": VECTORS})
    """Where the means and deviations (and, under raw, Eq. 6's language vectors) are fit: 'heldout' (on one half
    of the texts, applied to the other, then swapped) or 'all' (on every text)."""
    n_boot: int = DEFAULT_N_BOOT
    """Bootstrap resamples of the texts for the 95% intervals."""
    reference: str = "en"
    """Dominance: the target whose lead over the best other target gets an interval."""
    drop_first_token: bool = False
    """Leave the first content token out of the mean too (it can be a second attention sink); the effect of
    either choice is printed and saved (ses_first_token.csv)."""
    neurons: Path | None = None
    """A neuron set (lapelens folder or official .pth file) to plot its neurons per layer beside the SES."""
    max_tokens: int | None = None
    """Tokens kept per text (default: the model's context minus the separator)."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Texts per forward pass."""
    embeddings: Path | None = None
    """Read sentence embeddings saved by --embeddings-out instead of running a model (--model, --parallel,
    --n-texts and --max-tokens are then not used)."""
    embeddings_out: Path | None = field(default=None, metadata=OUTPUT)
    """Also save the sentence embeddings there (safetensors), to recompute any measure later without the model."""
    out: Path = field(metadata=OUTPUT)
    """Folder to write the CSVs, JSON and HTML figures to."""
    quiet: bool = False
    """No progress bars and no tables on stdout."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    return add_command(
        subparsers,
        "ses",
        SesConfig,
        run,
        help="Sentence-embedding similarity between aligned texts per layer, and language dominance.",
        description="Embed aligned texts (mean of each layer's hidden state over the content tokens, separator "
        "excluded), then write per layer the aligned cosine, the mismatched control over all pairs of different "
        "texts, their gap and top-1 retrieval of the translation, averaged over language pairs with bootstrap "
        "intervals (ses.csv, Fig. 6), retrieval into each target language (dominance.csv, Fig. 7), diagnostics of "
        "the embeddings' anisotropy, and HTML figures. The default standardized measure removes the mean all texts "
        "share; --measure raw shows the plain cosine.",
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
            raise LapelensError(
                f"--parallel {path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)."
            ) from None
        except pd.errors.EmptyDataError:
            raise LapelensError(
                f"--parallel {path} is empty: it needs a header of language codes and one row per aligned text."
            ) from None
        except pd.errors.ParserError as exc:
            raise LapelensError(f"--parallel {path} is not a readable CSV ({str(exc).splitlines()[0]}).") from None
        if "id" in frame.columns and (languages is None or "id" not in languages):  # "id" is also Indonesian
            frame = frame.set_index("id")
        if len(frame.columns) < 2:
            raise LapelensError(
                f"--parallel {path} has {len(frame.columns)} language column(s) "
                f"({', '.join(map(str, frame.columns)) or 'none'}): it needs one column per language, "
                "at least two, with language codes as the header."
            )
        if languages is not None:
            missing = [l for l in languages if l not in frame.columns]
            if missing:
                raise LapelensError(
                    f"--languages {','.join(missing)}: {missing} are not in the parallel data "
                    f"(--parallel {path} has columns {','.join(map(str, frame.columns))})."
                )
        if len(frame) == 0:
            raise LapelensError(f"--parallel {path} has a header but no rows of aligned text.")
        return frame
    return load_parallel(cfg.parallel, split=cfg.split, languages=languages)


def _check_fit(cfg: SesConfig, n_texts: int) -> None:
    if cfg.measure != "raw" and cfg.vectors == "heldout" and n_texts < 4:
        raise LapelensError(
            f"--measure {cfg.measure} with --vectors heldout fits each language's mean on half of the "
            f"texts and needs at least 4 aligned texts, got {n_texts}: give more texts or --vectors all."
        )


def _embeddings(cfg: SesConfig):
    import numpy as np

    languages = list(cfg.languages) if cfg.languages else None
    if languages is not None and len(languages) < 2:
        raise LapelensError(f"--languages {','.join(languages)}: SES compares languages, give at least two.")
    if cfg.embeddings is not None:
        emb = SentenceEmbeddings.load(cfg.embeddings)
        if languages is not None:
            missing = [l for l in languages if l not in emb.languages]
            if missing:
                raise LapelensError(
                    f"--languages {','.join(missing)}: not in the embeddings {cfg.embeddings} "
                    f"(they have {','.join(emb.languages)})."
                )
            emb = emb.subset(languages)
        return emb, None
    if cfg.n_texts < 2:
        raise LapelensError(
            f"--n-texts must be at least 2 (similarities are means over aligned texts), got {cfg.n_texts}."
        )
    for flag, value in (("--batch-size", cfg.batch_size), ("--max-tokens", cfg.max_tokens)):
        positive(value, flag)
    frame = _read_parallel(cfg, languages)
    if cfg.n_texts > len(frame):
        raise LapelensError(
            f"--n-texts {cfg.n_texts} is more than the {len(frame)} aligned texts of "
            f"{cfg.parallel!r} ({cfg.split}): ask for at most {len(frame)}."
        )
    _check_fit(cfg, cfg.n_texts)  # before the model runs
    # A random sample, kept in corpus order.
    rows = np.sort(np.random.default_rng(cfg.seed).choice(len(frame), size=cfg.n_texts, replace=False))
    sample = frame.iloc[rows]
    return None, (sample, languages)


def run(cfg: SesConfig) -> None:
    positive(cfg.n_boot, "--n-boot")
    emb, todo = _embeddings(cfg)
    neurons = load_neurons(cfg.neurons) if cfg.neurons is not None else None
    if emb is None:
        sample, languages = todo
        model = load_model(cfg.model, device=cfg.device)
        emb = sentence_embeddings(
            model,
            sample,
            languages=languages,
            batch_size=cfg.batch_size,
            max_tokens=cfg.max_tokens,
            progress=not cfg.quiet,
        )
        emb.meta.update(parallel=cfg.parallel, split=cfg.split, seed=cfg.seed)
        if cfg.embeddings_out is not None:
            emb.save(cfg.embeddings_out)
    emb = emb.with_first_token(not cfg.drop_first_token)
    ses = emb.similarity(neurons, cfg.measure, cfg.vectors, cfg.n_boot, cfg.seed)
    dominance = emb.dominance(cfg.measure, cfg.vectors, cfg.n_boot, cfg.seed, cfg.reference)
    ses.save(cfg.out)
    dominance.save(cfg.out)
    ses.figure().write_html(cfg.out / SES_HTML)  # plotly.js inline: opens offline
    dominance.figure().write_html(cfg.out / DOMINANCE_HTML)  # plotly.js inline: opens offline
    if not cfg.quiet:
        print(report(ses, dominance))
        print(f"\nwrote {cfg.out}")


def _ci(table, col: str) -> list[str]:
    return [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in zip(table[col], table[f"{col}_low"], table[f"{col}_high"])]


def report(ses, dominance) -> str:
    """The numbers of a SimilarityResult and DominanceResult as text: per layer, the peak, dominance,
    diagnostics and the first content token's effect."""
    import pandas as pd

    m, t = ses.meta, ses.ses
    lines = [
        f"SES per layer: measure {m['measure']}, vectors {m['vectors']}; {m['n_texts']} texts x "
        f"{len(m['languages'])} languages ({m.get('n_truncated', 0)} truncated); first content token "
        f"{'in' if m.get('first_token_in_mean', True) else 'out of'} the mean; retrieval chance {m['chance']:.3f}; "
        f"95% bootstrap intervals over texts ({m['n_boot']} resamples)"
    ]
    table = pd.DataFrame(
        {
            "mean": t["mean"].round(3),
            "mismatched": t["mismatched"].round(3),
            "gap": _ci(t, "gap"),
            "retrieval": _ci(t, "retrieval"),
        },
        index=t.index,
    )
    lines += [table.to_string(), ""]
    peak = ses.peak()
    last = len(t) - 1
    where = "inside the stack" if 0 < peak.name < last else "at the edge of the stack"
    lines.append(
        f"Largest gap: layer {peak.name} of 0..{last} ({where}): gap {peak['gap']:.3f} "
        f"[{peak['gap_low']:.3f}, {peak['gap_high']:.3f}], retrieval {peak['retrieval']:.3f} "
        f"[{peak['retrieval_low']:.3f}, {peak['retrieval_high']:.3f}]"
    )
    d = dominance
    if d.summary is not None:
        s = d.summary
        lines += [
            "",
            f"Dominance ({d.meta['measure']}): per target, mean over sources and layers",
            pd.DataFrame(
                {"retrieval": _ci(s, "retrieval"), "gap": _ci(s, "gap"), "layers_on_top": s["layers_on_top"]},
                index=s.index,
            ).to_string(),
        ]
    if d.contrast is not None:
        for stat, row in d.contrast.iterrows():
            lines.append(
                f"{row['reference']} minus the best other target ({row['best_other']}), {stat}: "
                f"{row['value']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]; {row['reference']} highest at "
                f"{int(row['layers_on_top'])} of {int(row['n_layers'])} layers"
            )
    if d.shifted is not None:
        eq6 = pd.DataFrame(
            {"shifted": d.shifted.mean(), "unshifted": d.unshifted.mean(), "mismatched": d.shifted_mismatched.mean()}
        ).round(3)
        lines += ["Eq. 6 (raw cosine to the target after h_k - v_k + v_c), mean over layers:", eq6.T.to_string()]
    if ses.energy is not None:
        diag = ses.energy[["shared", "language", "within"]].round(3)
        if ses.top_dimensions is not None:
            diag["top_dim"] = ses.top_dimensions["dim_1"]
            diag["top3_share"] = ses.top_dimensions["top_share"].round(3)
        if ses.norms is not None:
            n = ses.norms
            ratio = lambda col: (n[col] / n["token_median"]).groupby(level="layer")  # noqa: E731
            diag["sep/median"] = ratio("separator").mean().round(1)
            diag["first/median"] = ratio("first_token_median").max().round(2)
            diag["first_max/median"] = ratio("first_token_max").max().round(1)
            diag["sinks"] = n["first_token_sinks"].groupby(level="layer").mean().round(3)
        lines += [
            "",
            "Diagnostics (embeddings as they are): energy shares of the shared mean, the language means "
            "and the rest; top dimension of the shared mean and the share of its squared norm in the top 3; "
            "separator norm / median token norm (mean over languages); first content token / median token "
            "(median over texts, then its max, worst language); share of texts whose first token is over "
            "3x the median",
            diag.to_string(),
        ]
    if ses.first_token is not None:
        f = ses.first_token
        lines += [
            "",
            "First content token in vs out of the mean (point estimates, same measure):",
            f[["gap_first_in", "gap_first_out", "retrieval_first_in", "retrieval_first_out"]].round(3).to_string(),
        ]
    return "\n".join(lines)
