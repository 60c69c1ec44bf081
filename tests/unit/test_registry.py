"""A method registered in one place (here: this file) is everywhere a method is: `lapelens identify`
(flags, help, running it), `lapelens reproduce` (its stages) and the selection-ratio sweep."""

import json
from pathlib import Path

import pytest
import torch

import lapelens.pipeline as pipeline
from lapelens import ActivationStats, LanguageNeurons
from lapelens.cli import main
from lapelens.errors import LapelensError
from lapelens.evaluate.sweep import SweepResult, sweep_masks
from lapelens.methods import METHODS, OptionHelp, identify, register, unregister
from lapelens.methods._common import check_stats, settings
from tiny import TEXTS

NAME = "top-firing"


def top_firing(stats: ActivationStats, *, top_rate: float = 0.01) -> LanguageNeurons:
    """The ``round(top_rate * neurons)`` neurons with the largest firing probability, per language."""
    check_stats(stats)
    p = stats.firing_probability().reshape(len(stats.languages), -1)  # lang x unit
    budget = round(p.shape[1] * top_rate)
    mask = torch.zeros_like(p, dtype=torch.bool)
    mask.scatter_(1, torch.sort(p, dim=1, descending=True, stable=True).indices[:, :budget], True)
    meta = {"settings": settings(top_rate=top_rate), "model": stats.meta.get("model")}
    return LanguageNeurons(
        stats.languages, mask.reshape(-1, stats.n_layers, stats.d_mlp), NAME, meta, budget=budget, selected=budget
    )


@pytest.fixture
def registered():
    register(
        NAME,
        source="stats",
        summary="Most-firing neurons of each language (a toy method of the tests).",
        options={"top_rate": OptionHelp("share of the neurons kept per language", "rate")},
        sweepable=True,
        pipeline={"top_rate": "top_rate"},
    )(top_firing)
    yield METHODS[NAME]
    unregister(NAME)
    assert NAME not in METHODS


@pytest.fixture
def stats_dir(tmp_path):
    s = ActivationStats.zeros(("en", "zh"), 2, 4, meta={"model": "toy"})
    s.n[:] = 10
    s.count[0] = torch.tensor([[9, 1, 5, 0], [2, 8, 3, 7]])
    s.count[1] = torch.tensor([[0, 6, 1, 4], [9, 2, 2, 10]])
    s.save(tmp_path / "stats")
    return tmp_path / "stats"


def test_declared_once_and_listed_everywhere(registered):
    assert list(METHODS)[-1] == NAME and registered.stage == "neurons_top-firing"
    assert [o.name for o in registered.option_specs] == ["top_rate"]
    from lapelens.methods._registry import neuron_methods, sweep_methods

    assert NAME in sweep_methods() and NAME in neuron_methods()
    assert "pv" not in neuron_methods() and set(sweep_methods()) == {"lape", "lave", NAME}


def test_identify_help_and_run(registered, stats_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["identify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert NAME in text and "Most-firing neurons of each language" in text
    assert f"{NAME}: share of the neurons kept per language" in text  # the --top-rate flag names it

    assert (
        main(
            [
                "identify",
                "--method",
                NAME,
                "--stats",
                str(stats_dir),
                "--top-rate",
                "0.25",
                "--out",
                str(tmp_path / "n"),
            ]
        )
        == 0
    )
    n = LanguageNeurons.load(tmp_path / "n")
    assert n.method == NAME and n.meta["settings"]["top_rate"] == 0.25
    # 8 neurons, 2 per language: en fires most on (0, 0) 0.9 and (1, 1) 0.8; zh on (1, 3) 1.0 and (1, 0) 0.9.
    assert n.mask[0].nonzero().tolist() == [[0, 0], [1, 1]]
    assert n.mask[1].nonzero().tolist() == [[1, 0], [1, 3]]
    assert (
        main(["identify", "--method", NAME, "--stats", str(stats_dir), "--top-rate", "2", "--out", str(tmp_path / "x")])
        == 2
    )  # its option is checked as it declared (a rate)
    assert "--top-rate must be in (0, 1]" in capsys.readouterr().err


def test_reproduce_runs_it(registered, tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "_write_figure", lambda fig, path: None)  # drawing is not what is tested
    out = tmp_path / "run"
    argv = [
        "reproduce",
        "--out",
        str(out),
        "--model",
        str(tiny_dirs["llama"]),
        "--languages",
        "en,zh,fr",
        "--methods",
        f"lape,{NAME}",
        "--seq-len",
        "16",
        "--tokens-per-language",
        "256",
        "--eval-tokens-per-language",
        "32",
        "--top-rate",
        "0.1",
        "--ses-texts",
        "4",
        "--n-samples",
        "1",
        "--n-prompts",
        "1",
        "--max-new-tokens",
        "2",
        "--unconditional-tokens",
        "2",
        "--sweep-target",
        "none",
    ]
    assert main(argv) == 0
    record = json.loads((out / f"neurons_{NAME}" / "stage.json").read_text())
    assert record["inputs"]["settings"] == {"top_rate": 0.1} and list(record["inputs"]["depends"]) == ["stats"]
    stats = ActivationStats.load(out / "stats")
    assert torch.equal(LanguageNeurons.load(out / f"neurons_{NAME}").mask, top_firing(stats, top_rate=0.1).mask)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["perturbation"]) == {"lape", NAME}
    assert (out / f"perturb_{NAME}").is_dir()
    assert json.loads((out / "config.json").read_text())["methods"] == ["lape", NAME]


def test_sweep_runs_it(registered, stats_dir, tiny_dirs, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang, text in TEXTS.items():
        (corpus / f"{lang}.valid.txt").write_text("\n".join([text] * 6) + "\n", encoding="utf-8")
    stats = ActivationStats.load(stats_dir)
    # the tiny llama has 2 layers x 64 neurons: statistics of that shape
    big = ActivationStats.zeros(("en", "zh"), 2, 64, meta={"model": "toy"})
    big.n[:] = 100
    big.count[:] = torch.randint(0, 100, big.count.shape, generator=torch.Generator().manual_seed(1))
    big.save(tmp_path / "big")
    assert (
        main(
            [
                "sweep",
                "--method",
                NAME,
                "--stats",
                str(tmp_path / "big"),
                "--target",
                "zh",
                "--ratios",
                "0,0.05,0.1",
                "--model",
                str(tiny_dirs["llama"]),
                "--corpus",
                str(corpus),
                "--seq-len",
                "16",
                "--tokens-per-language",
                "32",
                "--out",
                str(tmp_path / "sweep"),
                "--quiet",
                "--n-boot",
                "10",
            ]
        )
        == 0
    )
    result = SweepResult.load(tmp_path / "sweep")
    assert result.meta["method"] == NAME and result.n_neurons == (0, 6, 13)  # round(128 * r) per language
    masks, _ = sweep_masks(stats, "en", [0.25], method=NAME)
    assert torch.equal(masks[0.25], identify(stats, NAME, top_rate=0.25).mask[0])


def test_method_stages_keep_the_names_and_inputs_of_earlier_runs():
    """The stages derived from the registry record exactly what the hand-written ones did (so the
    folders of earlier runs are reused): written out here as the pipeline used to build them."""
    from lapelens import ReproduceConfig

    calls = []

    def stage(name, inputs, compute, load, save):
        calls.append((name, inputs))
        return name

    def inputs(depends=(), **settings):
        return {"model": "M", "languages": ["en", "zh"], "settings": settings, "depends": list(depends)}

    cfg = ReproduceConfig(out="x", languages=("en", "zh"), top_rate=0.1, seed=3)
    train = {"corpus": "train split"}
    got = pipeline._method_stages(cfg, stage, inputs, "STATS", None, Path("x"), train, ["en", "zh"])
    assert calls == [
        ("neurons_lape", inputs(("stats",), top_rate=0.1)),
        ("neurons_lap", inputs(("stats",))),
        ("neurons_lave", inputs(("stats",), top_rate=0.1)),
        ("neurons_random", inputs(("neurons_lape",), seed=3)),
        ("sentences", {**inputs(ap_sentences=300), "corpus": train}),
        ("neurons_ap", inputs(("sentences",), ap_k=100)),
        ("neurons_pv", {**inputs(pv_steps=20, seed=3), "corpus": train}),
    ]
    assert list(got) == ["lape", "lap", "lave", "random", "ap", "pv"]
    calls.clear()  # random alone still computes LAPE, its reference, but returns only random
    assert list(
        pipeline._method_stages(
            ReproduceConfig(out="x", methods=("random",)), stage, inputs, "S", None, Path("x"), train, ["en"]
        )
    ) == ["random"]
    assert [name for name, _ in calls] == ["neurons_lape", "neurons_random"]


def test_experiments_find_their_methods_by_role():
    # The pipeline and the figures ask the registry, never a name: LAPE feeds Table 3, SES and the
    # steering experiments, random is the control, AP is pinned in Kojima's experiment.
    from lapelens.methods import with_role

    assert [with_role(r, METHODS) for r in ("primary", "baseline", "pinned")] == ["lape", "random", "ap"]
    assert with_role("primary", ["lap", "ap"]) is None and with_role("pinned", ["lap", "ap"]) == "ap"
    with pytest.raises(LapelensError, match="act on neurons, but it returns parameters"):
        register("toy-params", source="models", summary="x", returns="parameters", primary=True)(
            lambda base, *, tuned=None: None
        )
    assert "toy-params" not in METHODS
