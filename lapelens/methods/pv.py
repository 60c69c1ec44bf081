"""PV, parameter variation (Tang et al., 2024, §3.1, after Zhao et al., 2023).

Tune the base model on each language alone; a parameter is specific to the languages on which it
changed little while it changed a lot on the others. For every parameter ``θ`` and language k
with tuned value ``θ_k``:

1. change ratio ``r_k = |θ_k - θ| / |θ|``;
2. ``s_k = max_j r_j - r_k`` (large where language k changed it *least*);
3. LAPE's selection on ``s`` in place of firing probabilities (``entropy_select``): ``s`` is
   L1-normalised over languages, its entropy taken, parameters with no ``s_k`` above the
   ``filter_rate`` quantile dropped, the ``top_rate`` (1%) lowest-entropy parameters kept and
   assigned to every language with ``s_k`` above the ``activation_bar_ratio`` quantile.

Only the weight matrices inside transformer blocks are considered, i.e. the attention and MLP
projections (2-D ``*.weight`` tensors whose name has a block index such as ``.layers.3.``
or ``.h.3.``): embeddings, the LM head, norms and biases are left out. Entries with ``θ = 0``
have no defined ratio and are never selected. Ties in entropy go to the earlier entry in
checkpoint order, then flat index.

It selects *parameters*, so the result is a ``ParameterMask`` (per HF parameter name, a boolean
tensor ``lang x *shape``), which interventions zero.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor
from tqdm.auto import tqdm

from lapelens.errors import LapelensError
from lapelens.methods._common import settings
from lapelens.methods._registry import OptionHelp, register
from lapelens.methods.lape import ENTROPY_OPTIONS, entropy_select
from lapelens.parameters import ParameterMask
from lapelens.training import continue_training

#: A parameter inside a numbered transformer block (LLaMA/Mistral/Qwen ``model.layers.3.``,
#: GPT-2/BLOOM ``transformer.h.3.``, OPT ``model.decoder.layers.3.``, GPT-NeoX ``layers.3.``).
_BLOCK = re.compile(r"(^|\.)(layers|h|blocks|layer)\.\d+\.")


def is_block_matrix(name: str, tensor: Tensor) -> bool:
    """Attention or MLP weight matrix of a transformer block (what PV considers)."""
    return tensor.ndim == 2 and name.endswith("weight") and _BLOCK.search(name) is not None


def load_weights(source: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The block weight matrices of an HF model folder (``*.safetensors``) or of a state dict."""
    if isinstance(source, Mapping):
        return {k: v for k, v in source.items() if isinstance(v, Tensor) and is_block_matrix(k, v)}
    folder = Path(source)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise LapelensError(
            f"{folder} is not a model folder with safetensors weights: pass a folder written by "
            "save_pretrained (safe_serialization, the default)."
        )
    out: dict[str, Tensor] = {}
    try:
        for f in files:
            with safe_open(str(f), framework="pt") as fh:
                for name in fh.keys():
                    if name.endswith("weight") and _BLOCK.search(name):
                        t = fh.get_tensor(name)
                        if t.ndim == 2:
                            out[name] = t
    except Exception as exc:
        raise LapelensError(f"Cannot read the weights in {folder} ({type(exc).__name__}: {exc}).") from exc
    if not out:
        raise LapelensError(f"{folder} has no attention or MLP weight matrices inside numbered blocks.")
    return out


@register(
    "pv",
    source="models",
    summary="Parameter variation after per-language tuning (Tang et al. §3.1); returns a ParameterMask.",
    options={**ENTROPY_OPTIONS, "top_rate": OptionHelp("share of parameters to keep, in (0, 1] (0.01)", "rate")},
    returns="parameters",
    min_languages=2,
    order=60,
)
def pv(
    base: str | Path | Mapping[str, Tensor],
    *,
    tuned: Mapping[str, str | Path | Mapping[str, Tensor]],
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> ParameterMask:
    """Parameter variation between ``base`` and one tuned copy per language (``{lang: folder}``).

    Models are HF folders (safetensors) or state dicts. Memory grows with parameters x languages.
    """
    if not tuned or len(tuned) < 2:
        raise LapelensError("PV compares languages: give a tuned model for at least two languages.")
    languages = tuple(tuned)
    theta = load_weights(base)
    if not theta:
        raise LapelensError("The base model has no attention or MLP weight matrices inside numbered blocks.")
    tuned_w = {lang: load_weights(src) for lang, src in tuned.items()}
    names = list(theta)
    for lang, w in tuned_w.items():
        missing = [n for n in names if n not in w]
        if missing:
            raise LapelensError(
                f"The {lang} model lacks {missing[:3]}{'...' if len(missing) > 3 else ''}: it is not a tuned copy of the base."
            )
        bad = [n for n in names if w[n].shape != theta[n].shape]
        if bad:
            raise LapelensError(f"The {lang} model has other shapes for {bad[:3]}: it is not a tuned copy of the base.")

    scores = []
    for name in names:
        base_t = theta[name].to(torch.float32).flatten()
        ratios = torch.stack([(tuned_w[l][name].to(torch.float32).flatten() - base_t).abs() for l in languages], dim=-1)
        ratios = ratios / base_t.abs().unsqueeze(-1)
        s = ratios.max(dim=-1, keepdim=True).values - ratios
        s[base_t == 0] = 0  # ratio undefined: such entries are never selected
        scores.append(s)
    flat = torch.cat(scores)
    if not bool(torch.isfinite(flat).all()):
        raise LapelensError("The tuned weights contain NaN or inf: the tuning run diverged.")
    # flat is entries x lang: its transpose (a view) is the language-first input entropy_select takes,
    # and entropy_select's move back to languages last, where it computes, then copies nothing.
    mask, info = entropy_select(
        flat.T, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio
    )
    masks, start = {}, 0
    for name in names:
        n = theta[name].numel()
        masks[name] = mask[:, start : start + n].reshape(len(languages), *theta[name].shape).clone()
        start += n
    budget, selected = info.pop("budget"), info.pop("selected")
    meta = {
        "settings": settings(top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio),
        **info,
        "model": str(base) if not isinstance(base, Mapping) else None,
        "tuned": {l: (str(s) if not isinstance(s, Mapping) else None) for l, s in tuned.items()},
    }
    return ParameterMask(languages, masks, "pv", meta, budget, selected)


def tune_per_language(
    base_dir: str | Path,
    texts: Mapping[str, Sequence[str]],
    out_dir: str | Path,
    *,
    steps: int = 200,
    lr: float | None = None,
    seq_len: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """One short continued-training run of ``base_dir`` per language (``out_dir/<lang>``), for PV.

    Uses ``lapelens.training.continue_training`` with the same settings and seed for every language,
    so the copies differ only by their text. Options left at None take ``continue_training``'s
    defaults. One progress bar counts the steps of every language.
    """
    out_dir = Path(out_dir)
    given = {k: v for k, v in dict(lr=lr, seq_len=seq_len, batch_size=batch_size).items() if v is not None}
    with tqdm(total=steps * len(texts), desc="pv tuning", unit="step", disable=not progress) as bar:
        return {
            lang: Path(
                continue_training(base_dir, list(lang_texts), out_dir / lang, steps=steps, seed=seed, bar=bar, **given)
            )
            for lang, lang_texts in texts.items()
        }
