"""``ExplorerData`` -> one self-contained HTML page: the data as JSON, a hand-written script, inline SVG.

Nothing is loaded from anywhere: the page works from ``file://`` without network.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import torch
from torch import Tensor

from lapelens._version import __version__
from lapelens.explorer._assets import CSS, JS
from lapelens.explorer.data import ExplorerData
from lapelens.methods._registry import METHODS, with_role
from lapelens.stats import languages_last


def _round(t: Tensor, digits: int) -> list:
    """Nested lists of floats rounded to ``digits`` decimals (``-inf`` -> None): short JSON."""
    t = t.double()
    scale = 10.0**digits
    out = (torch.round(t * scale) / scale).tolist()
    if bool(torch.isinf(t).any()):
        def fix(x: Any) -> Any:
            return [fix(v) for v in x] if isinstance(x, list) else (None if math.isinf(x) else x)
        out = fix(out)
    return out


#: Context activations are shaded, not read: 35 levels of the neuron's largest kept value, one
#: character per token ("0"-"9", "a"-"z" for 0..35; "A"-"Z" for -1..-26), which keeps the page small.
LEVELS = 35
_POSITIVE = "0123456789abcdefghijklmnopqrstuvwxyz"
_NEGATIVE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def encode_levels(acts: Tensor, scale: Tensor) -> list:
    """``acts[d, k, r, w]`` as one string per context window (see ``LEVELS``)."""
    q = torch.round(acts / scale[:, None, None, None] * LEVELS).clamp(-len(_NEGATIVE), LEVELS).to(torch.int64)
    table = {v: (_NEGATIVE[-v - 1] if v < 0 else _POSITIVE[v]) for v in range(-len(_NEGATIVE), LEVELS + 1)}
    return [[["".join(table[v] for v in window) for window in k] for k in d] for d in q.tolist()]


def _tokens_label(per_language: dict) -> str:
    values = set(per_language.values())
    return f"{values.pop():,} tokens per language" if len(values) == 1 else ", ".join(f"{l} {n:,}" for l, n in per_language.items()) + " tokens"


def payload(data: ExplorerData) -> dict:
    """The JSON the page script reads. Per-neuron arrays are flat over ``layer * d_mlp + neuron``
    (times languages or top-k where they have that axis)."""
    s = data.samples
    flat = lambda rows: (rows[:, 0] * data.d_mlp + rows[:, 1]).tolist()  # noqa: E731
    scale = s.top.clamp_min(0).amax(dim=(1, 2)).nan_to_num(0, posinf=0, neginf=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    # Only the chunks some context points into, renumbered per language.
    chunks, texts, refs = {}, {}, torch.full_like(s.chunk, -1)
    for k, lang in enumerate(data.languages):
        used = s.chunk[:, k].unique()
        used = used[used >= 0]
        chunks[lang] = data.chunks[lang][used].tolist()
        fixes = data.chunk_text.get(lang, {})
        texts[lang] = {str(r): fixes[c] for r, c in enumerate(used.tolist()) if c in fixes}
        remap = torch.full((len(data.chunks[lang]),), -1, dtype=torch.long)
        remap[used] = torch.arange(len(used))
        refs[:, k] = torch.where(s.chunk[:, k] >= 0, remap[s.chunk[:, k].clamp_min(0)], -1)
    primary = with_role("primary", METHODS)
    settings = dict(data.settings)
    settings["context_tokens_label"] = _tokens_label(settings.get("context_tokens_per_language", {})) + " of train text"
    settings["loss_tokens_label"] = _tokens_label(settings.get("loss_tokens_per_language", {}))
    return {
        "lapelens_version": __version__,
        "model": data.model,
        "languages": list(data.languages),
        "n_layers": data.n_layers,
        "d_mlp": data.d_mlp,
        "n": data.n.tolist(),
        # The page reads count[f * K + k]: neuron f's languages side by side (layer neuron lang).
        "count": languages_last(data.count).flatten().tolist(),
        "mean": _round(languages_last(data.mean).flatten(), 4),
        "entropy": _round(data.entropy.flatten(), 5),
        "rank": data.lape_rank.flatten().tolist(),
        "lape_threshold": data.lape_threshold,
        "lape_total": int(data.selections[primary].any(dim=0).sum()) if primary in data.selections else 0,
        "selections": {m: {l: mask[k].flatten().nonzero().flatten().tolist() for k, l in enumerate(data.languages)}
                       for m, mask in data.selections.items()},
        "logits": {
            "top": data.promoted.shape[-1],
            "promoted": data.promoted.flatten().tolist(),
            "promoted_logit": _round(data.promoted_logit.flatten(), 3),
            "suppressed": data.suppressed.flatten().tolist(),
            "suppressed_logit": _round(data.suppressed_logit.flatten(), 3),
        },
        "detail": {
            "index": flat(s.neurons),
            "edges": _round(s.edges[:, [0, -1]], 5),
            "hist": s.hist.tolist(),
            "top": _round(s.top, 4),
            "scale": _round(scale, 5),
            "chunk": refs.tolist(),
            "pos": s.pos.tolist(),
            "act": encode_levels(s.acts, scale),
            "before": s.before,
            "levels": LEVELS,
        },
        "chunks": chunks,
        "chunk_text": texts,
        "loss": {"neurons": flat(data.loss_neurons), "base": _round(data.loss_base, 5), "delta": _round(data.loss_delta, 6)},
        "vocab": {str(i): t for i, t in data.vocab.items()},
        "settings": settings,
    }


def render(data: ExplorerData) -> str:
    """The whole page as one HTML string."""
    blob = json.dumps(payload(data), ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    st = data.settings
    title = f"lapelens neuron explorer: {data.model}"
    meta = (f"{data.n_layers} layers x {data.d_mlp} neurons, languages {', '.join(data.languages)}; run {st.get('run_dir', '?')}; "
            f"lapelens {__version__}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style></head>
<body>
<header><h1>{html.escape(title)}</h1><div class="meta">{html.escape(meta)}</div></header>
<main>
<section id="overview">
<h2>Overview: neurons selected per layer and language</h2>
<p>Method: <select id="method-select"></select>
<span class="note">Click a cell to list its neurons; click a neuron to open it.</span></p>
<div id="grid-box"></div>
<h3 id="list-title"></h3>
<div class="list" id="neuron-list"></div>
</section>
<section id="picker">
<h2>Open any neuron</h2>
layer <input type="number" id="layer-input" min="0" max="{data.n_layers - 1}" value="0">
neuron <input type="number" id="neuron-input" min="0" max="{data.d_mlp - 1}" value="0">
<button id="open-neuron">open</button> <span id="pick-error" class="err"></span>
<p class="note">Every neuron has its firing probabilities, mean activations, entropy and logit effects. Contexts and
histograms exist only for the {st.get('detail_neurons', 0):,} neurons that {', '.join(st.get('detail_methods', []))} selected; the loss change
only for {st.get('loss_neurons', 0)} of the {st.get('lape_neurons', 0)} LAPE neurons (a capped budget, so that the page builds in minutes).</p>
</section>
<div id="neuron-view" style="display:none">
<h2 id="neuron-title"></h2>
<div class="panels">
<section id="panel-selection" class="wide"></section>
<section id="panel-firing"></section>
<section id="panel-mean"></section>
<section id="panel-hist" class="wide"></section>
<section id="panel-logits"></section>
<section id="panel-loss"></section>
<section id="panel-contexts" class="wide"></section>
</div>
</div>
</main>
<script type="application/json" id="explorer-data">{blob}</script>
<script>{JS}</script>
</body></html>
"""
