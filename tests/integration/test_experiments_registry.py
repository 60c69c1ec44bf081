"""An experiment declared in one place (here: this file) is everywhere an experiment is:
``lapelens reproduce`` (its stage, its setting as a flag and in ``--quick``, its table, summary
entry and figure), ``lapelens figures``, ``lapelens.load`` (its result kind and the run's
results) and ``lapelens.<name>`` (its exported function)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

import lapelens
import lapelens.pipeline as pipeline
from lapelens.artifacts import KINDS, unregister_kind
from lapelens.cli import main
from lapelens.evaluate import EXPERIMENTS, Context, Setting, experiment, positive, unregister
from lapelens.neurons import LanguageNeurons
from lapelens.results import Result
from lapelens.stats import ActivationStats

NAME = "toy"


def make_toy():
    """The toy experiment's pieces, as its own module would define them (here inside a function, so
    that registering them is up to the fixture and other tests never see them)."""

    @dataclass
    class ToyResult(Result):
        """Per language: how many of the primary method's neurons lie in the first ``layers``
        layers, and their mean firing probability on that language."""

        table: pd.DataFrame
        meta: dict = field(default_factory=dict)

        kind = "toy_counts"
        marker = "toy.json"
        make = "`lapelens reproduce`"
        required = ("toy.csv",)
        files = ("toy.csv",)

        def _tables(self) -> dict:
            return {"toy.csv": (self.table, {"float_format": "%.17g"})}

        @classmethod
        def _read(cls, folder: Path, meta: dict) -> "ToyResult":
            return cls(pd.read_csv(folder / "toy.csv", index_col=0), meta)

        def figure(self) -> go.Figure:
            return go.Figure(go.Bar(x=list(self.table.index), y=self.table["firing"].tolist()))

    def toy_counts(neurons: LanguageNeurons, stats: ActivationStats, layers: int = 2) -> ToyResult:
        p = stats.firing_probability()
        rows = {}
        for k, lang in enumerate(neurons.languages):
            mask = neurons.mask[k, :layers]
            rows[lang] = {"neurons": int(mask.sum()), "firing": float(p[stats.lang_index(lang), :layers][mask].mean())}
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "language"
        return ToyResult(table, {"layers": layers, "method": neurons.method})

    layers = Setting(
        "toy_layers", 2, "Layers (from the first) whose neurons the toy experiment counts.", quick=1, check=positive()
    )

    def register() -> None:
        @experiment(
            NAME,
            result=ToyResult,
            reads=("primary", "stats"),
            settings=(layers,),
            figure="fig9_toy",
            tables=lambda r: {"toy.csv": r.table},
            summary=lambda r: {NAME: r.table["firing"].to_dict()},
            exports={"toy_counts": toy_counts},
            paper="none (a test's toy)",
            order=95,
        )
        def toy_stage(ctx: Context) -> ToyResult:
            return toy_counts(ctx.selection("primary"), ctx.stats, ctx.cfg.toy_layers)

    return ToyResult, toy_counts, register


@pytest.fixture
def toy():
    ToyResult, toy_counts, register = make_toy()
    register()
    yield ToyResult, toy_counts
    unregister(NAME)
    unregister_kind(ToyResult.kind)
    assert NAME not in EXPERIMENTS and "toy_counts" not in KINDS
    assert "toy_layers" not in {f.name for f in pipeline.reproduce_config().__dataclass_fields__.values()}


def test_declared_once_and_listed_everywhere(toy, capsys):
    ToyResult, toy_counts = toy
    assert list(EXPERIMENTS)[-1] == NAME and KINDS["toy_counts"].type is ToyResult
    assert lapelens.toy_counts is toy_counts and "toy_counts" in lapelens.__all__
    config = lapelens.ReproduceConfig(out="x")
    assert config.toy_layers == 2 and lapelens.ReproduceConfig.quick("x").toy_layers == 1
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--toy-layers TOY_LAYERS Layers (from the first) whose neurons the toy experiment counts. (default: 2)" in text
    )
    assert "--toy-layers 1;" in text  # in --quick's list
    with pytest.raises(lapelens.LapelensError, match="--toy-layers must be at least 1, got 0"):
        pipeline.validate(lapelens.ReproduceConfig(out="x", toy_layers=0))


def test_it_runs_through_reproduce_figures_and_load(toy, tiny_dirs, tmp_path, monkeypatch, capsys):
    ToyResult, toy_counts = toy
    monkeypatch.setattr(pipeline, "_write_figure", lambda fig, path: None)  # drawing is `lapelens figures`' test
    out = tmp_path / "run"
    argv = [
        "reproduce",
        "--quick",
        "--out",
        str(out),
        "--model",
        str(tiny_dirs["llama"]),
        "--languages",
        "en,zh,fr",
        "--methods",
        "lape",
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
    assert "--toy-layers 2 -> 1" in capsys.readouterr().out  # --quick lowered it

    # The numbers: computed again here from the saved statistics and neurons, by hand.
    stats, lape = ActivationStats.load(out / "stats"), LanguageNeurons.load(out / "neurons_lape")
    p = stats.count.double() / stats.n.double().view(-1, 1, 1)
    expected = {l: float(p[k, :1][lape.mask[k, :1]].mean()) for k, l in enumerate(lape.languages)}
    table = pd.read_csv(out / "tables" / "toy.csv", index_col=0)
    assert table["neurons"].to_dict() == {l: int(lape.mask[k, :1].sum()) for k, l in enumerate(lape.languages)}
    assert table["firing"].to_dict() == pytest.approx(expected, rel=1e-12, nan_ok=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary[NAME] == pytest.approx(expected, rel=1e-12, nan_ok=True)
    assert summary["recomputed"][NAME] == "not computed yet"
    record = json.loads((out / NAME / "stage.json").read_text())["inputs"]
    assert record["settings"] == {"toy_layers": 1} and list(record["depends"]) == ["neurons_lape", "stats"]
    assert json.loads((out / "config.json").read_text())["toy_layers"] == 1

    # lapelens.load: the stage folder as its kind, the run folder with the experiment among its results.
    saved = lapelens.load(out / NAME)
    assert isinstance(saved, ToyResult) and saved.meta["layers"] == 1
    run = lapelens.load(out)
    assert run[NAME].table.equals(saved.table) and set(run.results) >= {"layers", "perturb", "ses", NAME}
    pd.testing.assert_frame_equal(run[NAME].table, toy_counts(lape, stats, 1).table, check_exact=True)

    # lapelens figures: the toy's figure beside the others, from the saved result.
    assert main(["figures", str(out), "--out", str(tmp_path / "figs"), "--formats", "html"]) == 0
    assert "fig9_toy" in capsys.readouterr().out and (tmp_path / "figs" / "fig9_toy.html").is_file()
    assert run.figures()["fig9_toy"].data[0].y == tuple(saved.table["firing"])

    # Its setting is recorded: changed, exactly its stage is computed again.
    assert main([*argv, "--toy-layers", "2"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["recomputed"] == {NAME: "toy_layers 1 -> 2"}
    both = {l: float(p[k][lape.mask[k]].mean()) for k, l in enumerate(lape.languages)}  # the tiny model has 2 layers
    assert again[NAME] == pytest.approx(both, rel=1e-12, nan_ok=True)
