"""Loading hooked models, and the one place that says where a model's MLP neurons live.

DESIGN.md's hook table is encoded here and nowhere else:

=============  ===================  =====================  =================================
MLP kind       ``mlp.hook_pre``      ``mlp.hook_pre_linear``  ``mlp.hook_post``
=============  ===================  =====================  =================================
plain          ``x W_in + b_in``     --                     ``act_fn(hook_pre)``
gated          ``x W_gate``          ``x W_up``             ``act_fn(hook_pre) * hook_pre_linear``
=============  ===================  =====================  =================================

A neuron *fires* when ``hook_pre > 0``; that equals the paper's ``act_fn(.) > 0`` only for
activation functions with ``act(x) > 0  <=>  x > 0``, so every other function is refused.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lapelens._compat import fix_bridge_kv_cache
from lapelens.constants import EMBEDDED
from lapelens.errors import LapelensError
from lapelens.fastpath import cache_bridge_bookkeeping, run_quiet_layers_plain, skip_unobserved_norm_hooks, use_sdpa
from lapelens.pretrained import PRETRAINED, hf_folder
from lapelens.types import HookedModel

#: Activation functions (names as in ``transformers.activations.ACT2FN``) for which
#: ``act(x) > 0`` holds exactly when ``x > 0``, so ``hook_pre > 0`` is the paper's firing test.
SIGN_PRESERVING_ACTIVATIONS = frozenset(
    {
        "relu",
        "gelu",
        "gelu_new",
        "gelu_fast",
        "gelu_python",
        "gelu_pytorch_tanh",
        "gelu_accurate",
        "quick_gelu",
        "silu",
        "swish",
        "relu2",
        "elu",
    }
)

#: How attention runs: fused where no hook looks into it, or TransformerLens' eager attention everywhere.
ATTENTION = ("sdpa", "eager")
#: The dtypes a model can be loaded in, by name (statistics are summed in float64 whatever it is).
DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``torch.float32`` ... for one of :data:`DTYPES` (or a torch dtype among them)."""
    if isinstance(name, torch.dtype) and str(name).removeprefix("torch.") in DTYPES:
        return name
    if name not in DTYPES:
        raise LapelensError(f"dtype {name!r} is not supported: use one of {', '.join(DTYPES)}.")
    return getattr(torch, name)


#: Model families whose HF config does not name the activation (the module hard-codes it).
_HARDCODED_ACTIVATION = {"bloom": "gelu_pytorch_tanh"}


@dataclass(frozen=True)
class NeuronSpec:
    """Where the MLP neurons of a model live and what each hook holds."""

    n_layers: int
    d_mlp: int
    gated: bool
    act_name: str

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_mlp

    @staticmethod
    def hook_pre(layer: int) -> str:
        """Pre-activation of the neuron (the gate for gated MLPs): fires iff > 0."""
        return f"blocks.{layer}.mlp.hook_pre"

    @staticmethod
    def hook_pre_linear(layer: int) -> str:
        """The up projection of a gated MLP (absent for plain MLPs)."""
        return f"blocks.{layer}.mlp.hook_pre_linear"

    @staticmethod
    def hook_post(layer: int) -> str:
        """What the down projection reads: act(pre) (plain) or act(gate) * up (gated)."""
        return f"blocks.{layer}.mlp.hook_post"

    def act_fn(self) -> Callable[[Tensor], Tensor]:
        from transformers.activations import ACT2FN

        return ACT2FN[self.act_name]

    def activation(self, pre: Float[Tensor, "*batch neuron"]) -> Float[Tensor, "*batch neuron"]:
        """The neuron's activation value ``act_fn(hook_pre)`` (for gated MLPs: not ``hook_post``)."""
        return self.act_fn()(pre)

    def check_fits(self, n_layers: int, d_mlp: int, what: str = "neuron set") -> None:
        """Refuse a neuron set (or statistics) made for a model of another shape."""
        if (n_layers, d_mlp) != (self.n_layers, self.d_mlp):
            raise LapelensError(
                f"The {what} is for a model with {n_layers} layers x {d_mlp} neurons, but this model "
                f"has {self.n_layers} layers x {self.d_mlp} neurons: use the {what} computed on this model."
            )


def _activation_name(hf_config: Any) -> str:
    for attr in ("hidden_act", "activation_function", "hidden_activation"):
        name = getattr(hf_config, attr, None)
        if isinstance(name, str):
            return name
    model_type = getattr(hf_config, "model_type", None)
    if model_type in _HARDCODED_ACTIVATION:
        return _HARDCODED_ACTIVATION[model_type]
    raise LapelensError(
        f"Cannot tell the MLP activation function of model type {model_type!r} from its config "
        "(no hidden_act / activation_function): add it to lapelens.models._HARDCODED_ACTIVATION."
    )


def _probe_widths(model: Any, n_layers: int) -> list[int]:
    """MLP width of every layer, read off the hooks in one forward pass over a single token.

    The configs are not trusted for this: TransformerLens 4.3 reports ``d_mlp = 4 * d_model`` for
    OPT even when ``ffn_dim`` differs, and a hook that exists but never fires must be caught.
    """
    widths: dict[int, int] = {}

    def grab(layer: int):
        def hook(act: Tensor, hook: Any) -> None:
            widths[layer] = act.shape[-1]

        return hook

    fwd = [(NeuronSpec.hook_pre(i), grab(i)) for i in range(n_layers)]
    token = torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        model.run_with_hooks(token, fwd_hooks=fwd, return_type=None)
    return [widths.get(i, 0) for i in range(n_layers)]


#: Neuron layout per model object, without setting attributes on the user's model.
_SPECS: "weakref.WeakKeyDictionary[Any, NeuronSpec]" = weakref.WeakKeyDictionary()


def neuron_spec(model: HookedModel) -> NeuronSpec:
    """Read a hooked model's MLP layout; fail clearly if it has no MLP hooks or an unsafe activation."""
    cached = _SPECS.get(model)
    if cached is not None:
        return cached
    cfg = model.cfg
    hooks = getattr(model, "hook_dict", {})
    # An MoE block also has mlp.hook_pre/hook_post (router and expert mix), but no dense neurons.
    moe = (getattr(cfg, "num_experts", None) or 0) > 1
    if moe or cfg.n_layers < 1 or NeuronSpec.hook_pre(0) not in hooks or NeuronSpec.hook_post(0) not in hooks:
        raise LapelensError(
            f"Model {cfg.model_name!r} exposes no MLP hooks (blocks.0.mlp.hook_pre / hook_post): "
            "lapelens needs a TransformerLens model with dense MLP blocks (MoE and attention-only "
            "models are not supported)."
        )
    gated = NeuronSpec.hook_pre_linear(0) in hooks
    if gated != bool(getattr(cfg, "gated_mlp", gated)):
        raise LapelensError(
            f"Model {cfg.model_name!r}: the hooks and cfg.gated_mlp disagree on whether the MLP is gated."
        )
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    act_name = _activation_name(hf_config) if hf_config is not None else str(cfg.act_fn)
    if act_name not in SIGN_PRESERVING_ACTIVATIONS:
        raise LapelensError(
            f"Activation function {act_name!r} is not supported: LAPE counts a neuron as firing when "
            "act(x) > 0, which lapelens reads as x > 0, and that is only true for "
            f"{sorted(SIGN_PRESERVING_ACTIVATIONS)}."
        )
    widths = _probe_widths(model, cfg.n_layers)
    if len(set(widths)) != 1 or widths[0] == 0:
        raise LapelensError(
            f"Model {cfg.model_name!r} has MLP widths {widths} per layer; lapelens needs every layer's "
            "MLP hooks to fire with one common width."
        )
    spec = NeuronSpec(n_layers=cfg.n_layers, d_mlp=widths[0], gated=gated, act_name=act_name)
    _SPECS[model] = spec
    return spec


def embedded_model_dir() -> Path:
    """Folder of the small multilingual model that ships inside the package."""
    return Path(str(resources.files("lapelens") / "data" / "model"))


def load_model(
    name_or_path: str | Path = EMBEDDED,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    cache_dir: str | Path | None = None,
    device_map: str | dict[str, str | int] | None = None,
    offload_folder: str | Path | None = None,
    attention: str = "sdpa",
    hf_model: Any = None,
) -> Any:
    """A TransformerLens ``TransformerBridge`` for a hub name, a local HF folder, a ``.gguf`` file,
    a named pretrained model (``"smollm2-135m"``, ``"gemma-3-270m"``: see :mod:`lapelens.pretrained`)
    or ``"embedded"``.

    GGUF files and named models are dequantized once and cached as HF folders under ``cache_dir``
    (default: the user's cache directory). Weights are not processed (no LayerNorm folding, no
    centering), so the logits equal the HF model's. The returned model is in eval mode, its neuron
    layout is checked at once, and ``model.generate`` reads its KV cache (:mod:`lapelens._compat`).
    ``device_map`` (and ``offload_folder``) spread a model too big for one device over several, as in
    Hugging Face ``from_pretrained``; ``device`` is then ignored.

    ``dtype``: one of :data:`DTYPES` (a name or a torch dtype). bfloat16 has float32's range at
    half the memory; float16 can overflow, which ``collect`` detects and refuses.
    ``attention="sdpa"`` (the default) lets attention layers that no hook looks into run fused,
    as the plain Hugging Face model does, and a layer nothing is hooked in runs as the plain Hugging
    Face layer (:mod:`lapelens.fastpath`); every hook still fires where one is added. ``"eager"`` keeps TransformerLens' step-by-step attention in every layer (the two
    differ at float rounding).

    ``hf_model``: a Hugging Face causal LM already in memory (built from a config and randomly
    initialised, say) to bridge in place of loading weights; ``name_or_path`` is then the folder
    its tokenizer is read from, and the model keeps its own device and dtype.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if attention not in ATTENTION:
        raise LapelensError(f"attention={attention!r} is unknown: use one of {', '.join(ATTENTION)}.")
    dtype = torch_dtype(dtype)
    fix_bridge_kv_cache()  # without it cached decoding silently ignores the context
    name = str(name_or_path)
    if name in PRETRAINED or name.lower().endswith(".gguf"):
        name = str(hf_folder(name, cache_dir))
    if name == EMBEDDED:
        path = embedded_model_dir()
        if not (path / "config.json").is_file():
            raise LapelensError(
                f"The embedded model is missing from {path}: reinstall lapelens, or train one with "
                "`lapelens train --out DIR` and load that folder."
            )
        name = str(path)
    elif Path(name).expanduser().exists():
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise LapelensError(
                f"{path} has no config.json: pass a folder written by `save_pretrained` (config, "
                "weights and tokenizer), a hub name, or 'embedded'."
            )
        name = str(path)
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise LapelensError(
            f"Model folder {name!r} does not exist: check the path, or use 'embedded' "
            f"or a named model ({', '.join(PRETRAINED)})."
        )
    if hf_model is not None:
        if device_map is not None:
            raise LapelensError(
                "device_map applies to weights lapelens loads: place hf_model yourself before passing it."
            )
        weight = next(hf_model.parameters())
        device, dtype = weight.device, weight.dtype
    try:
        where: dict[str, Any] = (
            {"device": device}
            if device_map is None
            else {"device_map": device_map, "offload_folder": None if offload_folder is None else str(offload_folder)}
        )
        if hf_model is not None:
            where["hf_model"] = hf_model
        model = TransformerBridge.boot_transformers(name, dtype=dtype, **where)
    except OSError as exc:  # hub unreachable, unknown repo, or missing files
        raise LapelensError(
            f"Could not load model {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "For a hub model you need internet access (or a local copy: pass its folder); "
            "offline, use load_model('embedded')."
        ) from exc
    model.eval()
    use_sdpa(model, attention == "sdpa")
    skip_unobserved_norm_hooks(model)  # exact: the norm hooks nobody reads are not computed
    cache_bridge_bookkeeping()  # exact: the same calls without the per-call signature and offload lookups
    run_quiet_layers_plain()  # exact: a layer nothing is hooked in runs as the Hugging Face layer
    neuron_spec(model)
    return model
