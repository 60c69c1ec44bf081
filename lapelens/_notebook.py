"""The first cell of every walkthrough notebook: the model, its training text, the firing
statistics and the LAPE neurons, made in one call so that the four notebooks start alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lapelens.constants import EMBEDDED, PAPER_LANGUAGES
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats


@dataclass
class NotebookSetup:
    """What ``notebook_setup`` made; its repr says how much text went in and what came out."""

    model: Any
    train: dict[str, list[str]]
    stats: ActivationStats
    lape: LanguageNeurons
    #: How figures display: ``"png"`` (static images) or ``"plotly_mimetype"`` (interactive JSON).
    figures: str

    def __repr__(self) -> str:
        tokens = ", ".join(f"{lang} {int(n):,}" for lang, n in zip(self.stats.languages, self.stats.n))
        return (
            f"{self.lape.n_layers} layers x {self.lape.d_mlp} neurons; tokens seen per language: {tokens}\n"
            f"{int(self.lape.mask.any(0).sum())} LAPE neurons, settings {self.lape.meta.get('settings', {})}\n"
            f"figures display as {self.figures}"
        )


def notebook_setup(
    model: str = EMBEDDED,
    corpus: str = EMBEDDED,
    languages: Sequence[str] = PAPER_LANGUAGES,
    tokens_per_language: int = 20_000,
    seq_len: int = 256,
    top_rate: float = 0.1,
    png_figures: bool = True,
) -> NotebookSetup:
    """Load ``model``, read ``corpus``'s train split, collect firing statistics on
    ``tokens_per_language`` tokens of each language and select LAPE neurons.

    ``top_rate`` 0.1 is the share the embedded model is documented with (the paper's 0.01 is for
    models with 100x more neurons); pass a hub name and ``"wikipedia"`` for the paper's setting.
    With ``png_figures`` plotly figures display as PNG images when kaleido finds a browser (see
    ``_figure_renderer``). Those and a filter for transformers' ``past_key_values`` deprecation
    warning are the global settings the call changes.
    """
    import warnings

    # The first output of every notebook would otherwise be tqdm's "IProgress not found" warning
    # (raised on the first import of tqdm.auto; it names this machine's site-packages) and
    # transformers' weight-loading bar.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        # deferred into the filter: their first import is what warns
        from transformers.utils import logging as hf_logging

        from lapelens.activations import collect
        from lapelens.corpus import load_corpus
        from lapelens.methods import identify
        from lapelens.models import load_model
    # Every generate through the bridge makes transformers warn that `past_key_values` is deprecated
    # (the KV-cache work-around in lapelens._compat passes it); nothing a reader of a notebook can act on.
    warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
    figures = _figure_renderer(png_figures)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        loaded = load_model(model)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    train = load_corpus(corpus, split="train", languages=list(languages))
    stats = collect(loaded, train, tokens_per_language=tokens_per_language, seq_len=seq_len, progress=False)
    lape = identify(stats, "lape", top_rate=top_rate)
    return NotebookSetup(loaded, train, stats, lape, figures)


def _figure_renderer(png: bool) -> str:
    """Make plotly display figures as PNG (kaleido driving a local Chromium) if ``png`` and that
    works, else as plotly's JSON mimetype. Neither embeds plotly.js (4 MB) in the notebook, and a
    PNG shows where JavaScript does not run (GitHub, nbviewer). One kaleido server serves every
    figure of the session: a browser start per figure would cost seconds each."""
    import atexit
    import warnings

    import plotly.graph_objects as go
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype"
    if not png:
        return pio.renderers.default
    try:
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        # plotly passes browser options on every call, which a running server ignores (and says so).
        warnings.filterwarnings("ignore", "The kopts argument is ignored if using a server", UserWarning)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        pio.to_image(go.Figure(), format="png")
    except Exception:  # no kaleido, or no browser for it: a display preference, so fall back
        return pio.renderers.default
    pio.renderers.default = "png"
    return pio.renderers.default
