"""Live mode: one neuron's activation on each token of any text, as shaded HTML (for notebooks)."""

from __future__ import annotations

import html
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lapelens.errors import LapelensError
from lapelens.models import neuron_spec
from lapelens.tokens import separator_id
from lapelens.types import HookedModel


@torch.inference_mode()
def token_activations(model: HookedModel, layer: int, neuron: int, text: str) -> tuple[list[str], Float[Tensor, " pos"]]:
    """The tokens of ``[sep] + text`` (as ``lapelens collect`` feeds documents) and the neuron's
    activation ``act_fn(hook_pre)`` on each."""
    spec = neuron_spec(model)
    if not (0 <= layer < spec.n_layers and 0 <= neuron < spec.d_mlp):
        raise LapelensError(f"No neuron ({layer}, {neuron}): the model has {spec.n_layers} layers x {spec.d_mlp} neurons.")
    tok = model.tokenizer
    ids = [separator_id(tok)] + tok(text, add_special_tokens=False)["input_ids"]
    n_ctx = getattr(model.cfg, "n_ctx", None)
    ids = ids[:n_ctx] if n_ctx else ids
    got: dict[str, Tensor] = {}

    def hook(pre: Tensor, hook: Any) -> None:
        got["pre"] = pre[0, :, neuron].float().cpu()

    device = next(model.parameters()).device
    model.run_with_hooks(torch.tensor([ids], device=device), return_type=None, use_cache=False,
                         fwd_hooks=[(spec.hook_pre(layer), hook)])
    return [tok.decode([i]) for i in ids], spec.act_fn()(got["pre"])


def shaded_html(tokens: list[str], acts: Float[Tensor, " pos"], title: str = "") -> str:
    """Tokens as spans shaded by activation (orange positive, blue negative; relative to the largest)."""
    top = float(acts.abs().max()) or 1.0
    spans = []
    for text, a in zip(tokens, acts.tolist()):
        color = f"rgba(255,111,0,{max(a, 0) / top:.2f})" if a >= 0 else f"rgba(66,165,245,{min(1, -a / top * 4):.2f})"
        shown = html.escape(text.replace("\n", "\u23ce"))
        spans.append(f'<span class="tok" style="background:{color}" title="{a:.4f}" data-act="{a:.6f}">{shown}</span>')
    head = f"<div><b>{html.escape(title)}</b> max {float(acts.max()):.3f}</div>" if title else ""
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
    """Show neuron ``(layer, neuron)`` on text.

    With ``text``: an IPython HTML object of the shaded tokens. Without: a text box (ipywidgets)
    that re-shades as you type; without ipywidgets installed, pass ``text`` instead.
    """
    title = f"layer {layer}, neuron {neuron}"
    if text is not None:
        return html_object(shaded_html(*token_activations(model, layer, neuron, text), title=title))
    try:
        import ipywidgets as widgets
    except ImportError:
        raise LapelensError("ipywidgets is not installed: call live(model, layer, neuron, text='...') with a text, "
                            "or `pip install ipywidgets` for a text box.") from None
    box = widgets.Textarea(placeholder="Type text in any language", layout=widgets.Layout(width="100%"))
    out = widgets.HTML()

    def update(change: Any = None) -> None:
        out.value = shaded_html(*token_activations(model, layer, neuron, box.value), title=title) if box.value else ""

    box.observe(update, names="value")
    return widgets.VBox([box, out])
