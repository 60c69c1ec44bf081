"""``lapelens.load``: every kind of saved result round-trips, old folders (no kind) still load, and
a newer schema, another kind or a truncated tensor file is one clear ``LapelensError``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import lapelens
import lapelens.loader  # noqa: F401  (every kind registered, as lapelens.load sees them)
from lapelens.artifacts import KINDS, kinds_in
from lapelens.cli import main
from lapelens.errors import LapelensError
from lapelens.evaluate.embeddings import SentenceEmbeddings
from lapelens.evaluate.perplexity import PerturbationResult
from lapelens.neurons import LanguageNeurons
from lapelens.parameters import ParameterMask
from lapelens.run import Run, pair_key
from lapelens.stats import ActivationStats, SentenceActivations
from tiny import ROOT, fake_run, save_run

LANGS = ("en", "zh", "fr")


def make_stats() -> ActivationStats:
    g = torch.Generator().manual_seed(1)
    stats = ActivationStats.zeros(LANGS, 2, 8, meta={"model": "toy", "seq_len": 16})
    stats.n += torch.tensor([10, 20, 30])
    stats.count += torch.randint(0, 10, stats.count.shape, generator=g)
    stats.act_sum += torch.rand(stats.act_sum.shape, generator=g, dtype=torch.float64)
    stats.act_sq_sum += torch.rand(stats.act_sum.shape, generator=g, dtype=torch.float64)
    return stats


def make_results() -> dict[str, object]:
    """One result of every kind but "run" (tested on its own), keyed by kind."""
    g = torch.Generator().manual_seed(2)
    run = fake_run()
    mask = torch.rand(len(LANGS), 2, 8, generator=g) < 0.3
    return {
        "activation_stats": make_stats(),
        "sentence_activations": SentenceActivations(
            LANGS, torch.tensor([0, 1, 2, 0]), torch.rand(4, 2, 8, generator=g), {"model": "toy"}
        ),
        "language_neurons": LanguageNeurons(
            LANGS,
            mask,
            "lape",
            {"model": "toy", "settings": {"top_rate": 0.1}},
            {"median": torch.rand(mask.shape, generator=g)},
        ),
        "parameter_mask": ParameterMask(
            LANGS, {"model.layers.0.mlp.up_proj.weight": torch.rand(3, 4, 5, generator=g) < 0.2}, "pv", {"model": "toy"}
        ),
        "perturbation": run["perturb"]["lape"],
        "sweep": run["sweep"],
        "similarity": run["ses"],
        "dominance": run["dominance"],
        "sentence_embeddings": SentenceEmbeddings(
            LANGS,
            torch.rand(3, 4, 2, 5, generator=g),
            {"model": "toy"},
            torch.rand(3, 4, 2, 5, generator=g),
            torch.tensor([[1, 2, 3, 4]] * 3),
            torch.rand(3, 2, generator=g),
            torch.rand(3, 2, generator=g),
        ),
        "generation": run["steer_prompted"],
    }


def same(a, b) -> None:
    """Field by field: tensors and frames by value, the rest by ``==``."""
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        name, x, y = f.name, getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), name
        elif isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(
                x, y, check_dtype=False, check_index_type=False, check_column_type=False, check_names=False, obj=name
            )
        elif isinstance(x, dict) and x and all(isinstance(v, torch.Tensor) for v in x.values()):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
        elif isinstance(x, PerturbationResult):
            same(x, y)
        elif name == "meta":  # what produced it, and the version that saved it
            assert {k: v for k, v in y.items() if k != "lapelens_version"} == x, name
        else:
            assert x == y, name


def marker(kind: str, folder: Path) -> dict:
    return json.loads((folder / KINDS[kind].marker).read_text())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    results = make_results()
    return {kind: (r, r.save(root / kind)) for kind, r in results.items()}


def test_every_kind_round_trips(saved):
    assert set(saved) | {"run"} == set(KINDS)
    for kind, (result, folder) in saved.items():
        meta = marker(kind, folder)
        assert meta["kind"] == kind and meta["schema_version"] == KINDS[kind].schema, kind
        assert meta["lapelens_version"] == lapelens.__version__
        assert kinds_in(folder) == [kind]
        back = lapelens.load(folder)
        same(result, back)
        assert "kind" not in back.meta and "schema_version" not in back.meta
        # the marker file names the same result; the kind can be asked for
        same(result, lapelens.load(folder / KINDS[kind].marker, kind))
    stats, _ = saved["activation_stats"]
    back = lapelens.load(saved["activation_stats"][1])
    assert back.meta["model"] == "toy" and torch.equal(back.firing_probability(), stats.firing_probability())
    pert = lapelens.load(saved["perturbation"][1])
    assert pert.relative.equals(saved["perturbation"][0].relative)
    # every digit of a generation summary (1/7 here): a reused stage writes the same tables as a fresh one
    gen, folder = saved["generation"]
    pd.testing.assert_frame_equal(lapelens.load(folder).summary, gen.summary, check_dtype=False, check_exact=True)
    # a sweep folder holds its perturbation matrix: asking for that kind gives the matrix
    sweep, folder = saved["sweep"]
    assert lapelens.load(folder, "perturbation").relative.equals(sweep.matrix.relative)


def test_folder_without_kind_loads(saved, tmp_path):
    """Folders written before results recorded their kind (the real-model runs in runs/) still load."""
    import shutil

    from test_stats import save_schema_1

    for kind, (result, folder) in saved.items():
        old = tmp_path / kind
        if kind == "activation_stats":  # statistics of then were schema 1: layer x neuron x lang
            save_schema_1(result, old, kind=False)
        else:
            shutil.copytree(folder, old)
        for file in old.glob("*.json"):
            meta = json.loads(file.read_text())
            meta.pop("kind", None), meta.pop("schema_version", None)
            file.write_text(json.dumps(meta))
        same(result, lapelens.load(old))


def test_official_files_load(saved, tmp_path):
    neurons, _ = saved["language_neurons"]
    pth = neurons.to_official(tmp_path / "masks.pth")
    back = lapelens.load(pth, languages=LANGS, d_mlp=neurons.d_mlp)
    assert back.languages == LANGS and torch.equal(back.mask, neurons.mask)
    stats, _ = saved["activation_stats"]
    stats.to_official(tmp_path / "act", "toy")
    for path in (tmp_path / "act", tmp_path / "act" / "activation.zh.train.toy"):
        official = lapelens.load(path)
        assert official.languages == ("en", "zh", "fr")  # the paper's order
        assert torch.equal(official.count, stats.count) and torch.equal(official.n, stats.n)


def test_run_folder_loads(tmp_path):
    run = save_run(fake_run(), tmp_path / "run")
    (run / "summary.json").write_text("{}")
    back = lapelens.load(run)
    assert isinstance(back, Run) and set(back["perturb"]) == {"lape", "random"}
    assert back["perturb"]["lape"].ppl.equals(lapelens.load(run / "perturb_lape").ppl)
    assert back.summary == {} and back.methods == ["lape", "random", "ap"]
    assert torch.equal(back["layers"].neurons.mask, lapelens.load(run / "neurons_lape").mask)


def test_newer_schema_is_refused(saved, tmp_path):
    import shutil

    folder = shutil.copytree(saved["language_neurons"][1], tmp_path / "n")
    meta = marker("language_neurons", folder)
    meta["schema_version"] = KINDS["language_neurons"].schema + 1
    (folder / "neurons.json").write_text(json.dumps(meta))
    for load in (lapelens.load, LanguageNeurons.load):
        with pytest.raises(LapelensError, match=r"schema version 2 .* update your lapelens clone") as err:
            load(folder)
        # lapelens is installed from its repository: `pip install -U lapelens` would fail
        assert "\n" not in str(err.value) and "git pull && pip install -e ." in str(err.value)
        assert "pip install -U" not in str(err.value)


def test_an_older_schema_is_never_read_as_the_current_one(saved, monkeypatch):
    """A kind whose schema grew converts older folders in its reader; without a conversion, refused."""
    import lapelens.artifacts as artifacts

    folder = saved["language_neurons"][1]  # schema 1
    monkeypatch.setitem(artifacts.KINDS, "language_neurons", dataclasses.replace(KINDS["language_neurons"], schema=2))
    with pytest.raises(
        LapelensError, match=r"schema version 1, which this lapelens .* cannot convert to schema 2"
    ) as err:
        LanguageNeurons.load(folder)
    assert "\n" not in str(err.value)


def test_another_kind_is_refused(saved, tmp_path):
    stats_folder = saved["activation_stats"][1]
    with pytest.raises(
        LapelensError, match=r"holds a activation_stats result \(ActivationStats\), not a language_neurons"
    ):
        LanguageNeurons.load(stats_folder)
    with pytest.raises(LapelensError, match="holds a language_neurons result"):
        ActivationStats.load(saved["language_neurons"][1])
    with pytest.raises(LapelensError, match="not a parameter_mask result"):
        lapelens.load(stats_folder, "parameter_mask")
    # a marker whose recorded kind contradicts its file name
    import shutil

    folder = shutil.copytree(saved["perturbation"][1], tmp_path / "p")
    meta = marker("perturbation", folder)
    meta["kind"] = "sweep"
    (folder / "perturbation.json").write_text(json.dumps(meta))
    with pytest.raises(LapelensError, match="holds a sweep result"):
        lapelens.load(folder)
    # the CLI says so in one line
    assert main(["neurons", "show", str(stats_folder)]) == 2


def test_truncated_tensor_file_is_refused(saved, tmp_path):
    import shutil

    for kind, tensors in (
        ("activation_stats", "stats.safetensors"),
        ("language_neurons", "neurons.safetensors"),
        ("parameter_mask", "params.safetensors"),
        ("sentence_activations", "sentences.safetensors"),
    ):
        folder = shutil.copytree(saved[kind][1], tmp_path / kind)
        data = (folder / tensors).read_bytes()
        (folder / tensors).write_bytes(data[: len(data) // 2])
        with pytest.raises(LapelensError, match="corrupt or truncated") as err:
            lapelens.load(folder)
        assert str(folder / tensors) in str(err.value) and "again" in str(err.value) and "\n" not in str(err.value)


def test_unknown_and_ambiguous_paths(saved, tmp_path):
    with pytest.raises(LapelensError, match="does not exist"):
        lapelens.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LapelensError, match="holds no lapelens result"):
        lapelens.load(tmp_path / "empty")
    with pytest.raises(LapelensError, match="Unknown result kind"):
        lapelens.load(tmp_path / "empty", "neurons")
    both = tmp_path / "ses"  # `lapelens ses` writes both results into one folder
    saved["similarity"][0].save(both)
    saved["dominance"][0].save(both)
    with pytest.raises(LapelensError, match="several results"):
        lapelens.load(both)
    assert lapelens.load(both, "dominance").retrieval.equals(lapelens.load(both / "dominance.json").retrieval)


def test_summary_pair_keys_in_both_forms(tmp_path):
    """Runs written before "en->zh" keys (the committed figures/*/summary.json) read the same."""
    assert pair_key("('en', 'zh')") == pair_key("en->zh") == "en->zh"
    assert pair_key("en") == "en" and pair_key("(not a tuple") == "(not a tuple"
    old = {"model": "m", "steer_prompted": {"('en', 'zh')": {"steered": 0.5}}, "lape_per_language": {"en": 3}}
    new = {"model": "m", "steer_prompted": {"en->zh": {"steered": 0.5}}, "lape_per_language": {"en": 3}}
    for i, summary in enumerate((old, new)):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "summary.json").write_text(json.dumps(summary))
    assert Run(tmp_path / "0").summary == Run(tmp_path / "1").summary == new
    shipped = ROOT / "figures" / "smollm2-135m"
    if (shipped / "summary.json").is_file():
        assert "en->zh" in Run(shipped).summary["steer_prompted"]
