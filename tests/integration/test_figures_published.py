"""A published folder (``lapelens figures RUN_DIR --out DIR``): the figures with the small data they
are drawn from, read by ``Run`` and redrawn from it alone, identically; and the figure checker of
``scripts/check_figures.py``, on such a folder and on figures built to break each of its rules."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from lapelens.cli import main
from lapelens.errors import LapelensError
from lapelens.evaluate import figures_of
from lapelens.figures import write_figures
from lapelens.parameters import ParameterMask
from lapelens.run import Run
from tiny import ROOT, RUN_LANGS, fake_run, save_run


def _script():
    spec = importlib.util.spec_from_file_location("check_figures", ROOT / "scripts" / "check_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _script()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run as reproduce leaves it: stage folders, tables, summary, and the big folders
    a published copy leaves out (statistics, sentence embeddings, PV's mask and tuned models)."""
    folder = save_run(fake_run(), tmp_path_factory.mktemp("run"), methods=("lape", "random", "ap", "pv"))
    config = json.loads((folder / "config.json").read_text())
    ParameterMask(RUN_LANGS, {"blocks.0.mlp.W_in": torch.rand(len(RUN_LANGS), 8, 16) < 0.1}).save(folder / "neurons_pv")
    for name in ("stats", "sentences", "neurons_pv", "pv_tuned"):
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "stage.json").write_text("{}")
        (folder / name / "big.safetensors").write_bytes(b"\0" * 1000)
        config["stages"][name] = "x"
    config["model"] = "embedded"
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps({"steer_prompted": {"en->zh": {"steered": 0.5}}}))
    (folder / "tables").mkdir()
    (folder / "tables" / "perturbation_summary.csv").write_text("method,x\nlape,1\n")
    return folder


def pages(folder: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(folder.glob("*.html"))}


def test_publish_copies_the_data_and_redraws_the_same_figures_from_it_alone(run_dir, tmp_path, capsys):
    out = tmp_path / "published"
    assert main(["figures", str(run_dir), "--out", str(out), "--formats", "html"]) == 0
    assert "and the data they are drawn from" in capsys.readouterr().out
    direct = figures_of(fake_run())
    write_figures(direct, tmp_path / "direct", formats=("html",))
    first = pages(out)
    assert first == pages(tmp_path / "direct") and len(first) == 11
    # what was copied, and what was not
    record = json.loads((out / "published.json").read_text())
    assert record["kind"] == "published_run"
    assert set(record["folders"]) == {
        "tables",
        "neurons_lape",
        "perturb_lape",
        "perturb_random",
        "sweep",
        "ses",
        "dominance",
        "steer_unconditional",
        "steer_prompted",
        "deactivated_generation",
        "kojima",
    }
    assert record["left_out"] == ["neurons_pv", "pv_tuned", "sentences", "stats"]
    for name in record["left_out"]:
        assert not (out / name).exists()
    for name in record["folders"]:
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(p.name for p in (run_dir / name).iterdir())
    assert (out / "summary.json").read_bytes() == (run_dir / "summary.json").read_bytes()
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix != ".js") < 3_000_000
    # Run reads it as the run; what it lacks is simply absent
    published = Run(out)
    assert published.published and published.figures_dir == out and published.methods == ["lape", "random", "ap", "pv"]
    assert set(published.results) == set(Run(run_dir).results)
    assert published.summary == {"steer_prompted": {"en->zh": {"steered": 0.5}}}
    with pytest.raises(LapelensError, match="is a published run .* use the run folder it was published from"):
        _ = published.stats
    # redrawn in place (the default out of a published folder is the folder itself), byte for byte
    for page in out.glob("*.html"):
        page.unlink()
    assert main(["figures", str(out), "--formats", "html"]) == 0
    assert "data they are drawn from" not in capsys.readouterr().out
    assert pages(out) == first
    # and published again from the published copy: the same figures, the same data
    assert main(["figures", str(out), "--out", str(tmp_path / "again"), "--formats", "html"]) == 0
    assert pages(tmp_path / "again") == first
    assert json.loads((tmp_path / "again" / "published.json").read_text())["folders"] == record["folders"]
    assert check.check_folder(out) == []


# ---- scripts/check_figures.py ------------------------------------------------------------------------
def folder_with(tmp_path: Path, figs: dict[str, go.Figure], model: str = "embedded") -> Path:
    folder = tmp_path / "figs"
    write_figures(figs, folder, formats=("html",))
    (folder / "config.json").write_text(json.dumps({"model": model}))
    return folder


@pytest.fixture(scope="module")
def good():
    return figures_of(fake_run())


def test_the_checker_passes_the_figures_of_a_run(good, tmp_path):
    assert check.check_folder(folder_with(tmp_path, good)) == []
    assert check.main([str(tmp_path / "figs")]) == 0
    # the model as the run records it: a name, or the shipped model's folder on some machine
    assert check.model_name(folder_with(tmp_path, good, "/opt/lapelens/data/model"), None) == "embedded"
    assert (
        check.model_name(folder_with(tmp_path, good, "HuggingFaceTB/SmolLM2-135M"), None)
        == "HuggingFaceTB/SmolLM2-135M"
    )
    assert check.check_folder(folder_with(tmp_path, good, "gemma-3-270m"))[0].endswith("does not name 'gemma-3-270m'")


def test_the_checker_fails_each_rule(good, tmp_path, capsys):
    broken = {k: copy.deepcopy(v) for k, v in good.items()}
    broken["fig2_perturb_random"].data[0].update(zmin=-1, zmax=1)  # its own colour range
    broken["fig5_layers"].update_layout(title_text="Fig. 5: neurons per layer")  # no model
    broken["fig7_dominance"].data[1].visible = "legendonly"
    broken["fig4_sweep"].layout.shapes = ()  # the rate not marked
    broken["steer_prompted"] = go.Figure(go.Bar(x=["en→zh"], y=[0.5]), layout={"title": "Table 5 — embedded"})
    flat = 10.0 ** np.arange(-2, 9)  # 0.01 to 10^8 on a linear axis: all but the last two on zero
    broken["flat"] = go.Figure(
        go.Scatter(x=list(range(flat.size)), y=flat, name="LAP"), layout={"title": "x — embedded"}
    )
    folder = folder_with(tmp_path, broken)
    problems = check.check_folder(folder)
    rules = sorted({line.split(": ")[1] for line in problems})
    assert rules == ["flattened", "hidden", "model", "rate", "shared range", "table 5"], problems
    assert any("fig7_dominance.html: hidden" in p for p in problems)
    assert any("flat.html: flattened: LAP" in p for p in problems)
    assert any("fig5_layers.html: model" in p for p in problems)
    assert check.main([str(folder)]) == 1
    assert "6 problem(s)" in capsys.readouterr().err


def test_flattened_is_defined_on_the_values_and_their_axis():
    spans = lambda y, **axis: check.flattened({"data": [{"type": "scatter", "y": list(y)}], "layout": {"yaxis": axis}})  # noqa: E731
    assert spans([0.01, 0.02, 0.03, 0.04, 0.05, 1e6])  # 10^8 x, 5 of 6 points in the bottom 2%
    assert not spans([0.01, 0.02, 0.03, 0.04, 0.05, 1e6], type="log")  # a log axis shows them
    assert not spans([1, 2, 3, 4, 5, 90])  # under 100 x: not orders of magnitude
    assert not spans([0.01, 1e5, 3e5, 5e5, 7e5, 1e6])  # spread over the axis
    assert not spans([0.01, 0.02, 0.03], range=[0, 0.05])  # an axis fitted to them


def test_the_committed_embedded_folder_passes_once_published():
    folder = ROOT / "figures" / "embedded"
    if not (folder / "published.json").is_file():
        pytest.skip(
            "figures/embedded predates the published layout: regenerate it with "
            "`lapelens figures RUN_DIR --out figures/embedded`"
        )
    assert check.check_folder(folder) == []
