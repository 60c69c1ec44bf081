"""A neuron on new text, and steered continuations: what the live server and notebooks ask of the model.

Text runs as ``lapelens collect`` feeds documents: the separator (BOS, else EOS) then its tokens.
Bad input raises one :class:`LapelensError` line (the server answers it with a 400).
"""

from __future__ import annotations

import html
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from lapelens.errors import LapelensError
from lapelens.evaluate.generation import Sampling, generate_ids
from lapelens.explorer.text import merged_runs
from lapelens.interventions import set_activations
from lapelens.models import neuron_spec
from lapelens.tokens import separator_id
from lapelens.types import HookedModel

#: Bounds on what one request may ask (the page's inputs use the same).
LIMITS = {"max_text_chars": 4000, "max_tokens": 1024, "max_new_tokens": 200}


@dataclass
class TokenActivations:
    """One neuron's activation ``act_fn(hook_pre)`` on each token of a text (the separator apart)."""

    ids: list[int]
    tokens: list[str]
    values: list[float]
    #: Byte pieces merged into characters: ``(start, length, text)``.
    runs: list[tuple[int, int, str]]
    separator: tuple[int, str, float]

    def json(self) -> dict:
        sep_id, sep_text, sep_value = self.separator
        return {
            "tokens": self.tokens,
            "values": self.values,
            "ids": self.ids,
            "runs": [list(r) for r in self.runs],
            "separator": {"id": sep_id, "token": sep_text, "value": sep_value},
        }


def check_neuron(model: HookedModel, layer: Any, neuron: Any) -> tuple[int, int]:
    spec = neuron_spec(model)
    try:
        layer, neuron = int(layer), int(neuron)
    except (TypeError, ValueError):
        raise LapelensError(f"layer and neuron must be whole numbers, got {layer!r} and {neuron!r}.") from None
    if not (0 <= layer < spec.n_layers and 0 <= neuron < spec.d_mlp):
        raise LapelensError(
            f"No neuron ({layer}, {neuron}): the model has layers 0-{spec.n_layers - 1} and neurons 0-{spec.d_mlp - 1}."
        )
    return layer, neuron


def number(value: Any, what: str) -> float:
    """A finite float from a request parameter, or one clear error."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise LapelensError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(x):
        raise LapelensError(f"{what} must be a finite number, got {value!r}.")
    return x


def encode(model: HookedModel, text: str, what: str, room: int = 0, allow_empty: bool = False) -> list[int]:
    """``[separator] + tokens of text``, refusing empty or over-long text."""
    if not isinstance(text, str) or (not text and not allow_empty):
        raise LapelensError(f"The {what} is empty: give some text.")
    if len(text) > LIMITS["max_text_chars"]:
        raise LapelensError(f"The {what} has {len(text):,} characters; at most {LIMITS['max_text_chars']:,}.")
    tok = model.tokenizer
    ids = [separator_id(tok)] + (tok(text, add_special_tokens=False)["input_ids"] if text else [])
    n_ctx = getattr(model.cfg, "n_ctx", None) or LIMITS["max_tokens"]
    most = min(LIMITS["max_tokens"], n_ctx) - room
    if len(ids) > most:
        raise LapelensError(f"The {what} is {len(ids) - 1:,} tokens; at most {most - 1:,} fit.")
    return ids


@torch.inference_mode()
def token_activations(model: HookedModel, layer: int, neuron: int, text: str) -> TokenActivations:
    """``act_fn(hook_pre)`` of neuron ``(layer, neuron)`` on each token of ``[sep] + text``."""
    layer, neuron = check_neuron(model, layer, neuron)
    spec = neuron_spec(model)
    ids = encode(model, text, "text")
    got: dict[str, torch.Tensor] = {}

    def hook(pre: torch.Tensor, hook: Any) -> None:
        got["pre"] = pre[0, :, neuron].float().cpu()

    device = next(model.parameters()).device
    model.run_with_hooks(
        torch.tensor([ids], device=device), return_type=None, use_cache=False, fwd_hooks=[(spec.hook_pre(layer), hook)]
    )
    values = spec.act_fn()(got["pre"]).tolist()
    tok = model.tokenizer
    tokens = [tok.decode([i]) for i in ids]
    return TokenActivations(ids[1:], tokens[1:], values[1:], merged_runs(tok, ids[1:]), (ids[0], tokens[0], values[0]))


def neuron_setting(model: HookedModel, layer: int, neuron: int, value: float) -> AbstractContextManager:
    """Neuron ``(layer, neuron)``'s activation set to ``value`` at every position (``lapelens.set_activations``)."""
    layer, neuron = check_neuron(model, layer, neuron)
    spec = neuron_spec(model)
    mask = torch.zeros(spec.n_layers, spec.d_mlp, dtype=torch.bool)
    mask[layer, neuron] = True
    return set_activations(model, mask, number(value, "value"))


@torch.inference_mode()
def continuation(
    model: HookedModel, prompt: str, max_new_tokens: int, intervention: AbstractContextManager | None = None
) -> tuple[list[int], str]:
    """Greedy continuation (no repetition penalty, up to EOS) of ``[sep] + prompt`` under ``intervention``."""
    if not 1 <= max_new_tokens <= LIMITS["max_new_tokens"]:
        raise LapelensError(f"max_new_tokens must be 1-{LIMITS['max_new_tokens']}, got {max_new_tokens}.")
    ids = encode(model, prompt, "prompt", room=max_new_tokens, allow_empty=True)
    sampling = Sampling(max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.0, batch_size=1)
    with intervention or nullcontext():
        new = generate_ids(model, [ids], sampling)[0]
    return new, model.tokenizer.decode(new, skip_special_tokens=True)


def shaded_html(acts: TokenActivations, title: str = "") -> str:
    """Tokens as spans shaded by activation (orange positive, blue negative; relative to the largest)."""
    top = max((abs(v) for v in acts.values), default=0.0) or 1.0
    spans = []
    for text, a in zip(acts.tokens, acts.values):
        color = f"rgba(255,111,0,{max(a, 0) / top:.2f})" if a >= 0 else f"rgba(66,165,245,{min(1, -a / top * 4):.2f})"
        shown = html.escape(text.replace("\n", "\u23ce"))
        spans.append(f'<span class="tok" style="background:{color}" title="{a:.4f}" data-act="{a:.6f}">{shown}</span>')
    head = f"<div><b>{html.escape(title)}</b> max {max(acts.values, default=0.0):.3f}</div>" if title else ""
    return f'<div class="lapelens-live" style="font-family:monospace;white-space:pre-wrap">{head}{"".join(spans)}</div>'


class _HTML:
    """Stands in for ``IPython.display.HTML`` where IPython is not installed (same display protocol)."""

    def __init__(self, data: str):
        self.data = data

    def _repr_html_(self) -> str:
        return self.data


def html_object(data: str) -> Any:
    """An ``IPython.display.HTML`` of ``data`` (a notebook shows it inline), or a stand-in without IPython."""
    try:
        from IPython.display import HTML
    except ImportError:
        return _HTML(data)
    return HTML(data)


def live(model: HookedModel, layer: int, neuron: int, text: str | None = None) -> Any:
    """Show neuron ``(layer, neuron)`` on text in a notebook.

    With ``text``: an IPython HTML object of the shaded tokens. Without: a text box (ipywidgets)
    that re-shades as you type; without ipywidgets installed, pass ``text`` instead.
    """
    title = f"layer {layer}, neuron {neuron}"
    if text is not None:
        return html_object(shaded_html(token_activations(model, layer, neuron, text), title=title))
    try:
        import ipywidgets as widgets
    except ImportError:
        raise LapelensError(
            "ipywidgets is not installed: call live(model, layer, neuron, text='...') with a text, "
            "or `pip install ipywidgets` for a text box."
        ) from None
    box = widgets.Textarea(placeholder="Type text in any language", layout=widgets.Layout(width="100%"))
    out = widgets.HTML()

    def update(change: Any = None) -> None:
        out.value = shaded_html(token_activations(model, layer, neuron, box.value), title=title) if box.value else ""

    box.observe(update, names="value")
    return widgets.VBox([box, out])
