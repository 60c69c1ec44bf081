"""``Run``, the one reader of a run folder: what counts as part of the run, with and without its config."""

from __future__ import annotations

import json
import shutil

import pytest

import lapelens
from lapelens.errors import LapelensError
from lapelens.run import Run
from tiny import fake_run, save_run


def test_a_folder_without_config_counts_every_stage_it_has(tmp_path):
    folder = save_run(fake_run(), tmp_path / "run", methods=("lape",))
    (folder / "config.json").unlink()  # a run stopped before its end
    run = Run(folder)
    assert not run.finished and run.stages is None
    assert run.methods == ["lape", "random"]  # from neurons_lape and perturb_random, in registry order
    assert set(run["perturb"]) == {"lape", "random"} and "kojima" not in run.results  # no AP: Kojima cannot have run
    assert run["layers"].method == "lape"
    with pytest.raises(LapelensError, match="no summary.json: it is not a finished"):
        _ = run.summary
    with pytest.raises(LapelensError, match="has no stats/"):
        _ = run.stats
    with pytest.raises(KeyError, match="holds no 'nothing' result"):
        run["nothing"]
    with pytest.raises(LapelensError, match="holds no lapelens result"):  # lapelens.load needs a finished run
        lapelens.load(folder)


def test_a_stage_the_run_did_not_record_is_not_part_of_it(tmp_path):
    folder = save_run(fake_run(), tmp_path / "run")
    shutil.copytree(folder / "perturb_lape", folder / "perturb_lap")  # left from an earlier run with lap
    config = json.loads((folder / "config.json").read_text())
    del config["stages"]["ses"]  # a ses folder this run did not compute
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps({"steer_prompted": {"('en', 'zh')": {"steered": 0.5}}}))
    run = lapelens.load(folder)
    assert isinstance(run, Run) and set(run["perturb"]) == {"lape", "random"} and "ses" not in run.results
    assert "fig6_ses" not in run.figures() and "fig2_perturb_lap" not in run.figures()
    assert run.summary == {"steer_prompted": {"en->zh": {"steered": 0.5}}}
