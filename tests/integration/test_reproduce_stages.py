"""reproduce never reports a result computed with other settings than those recorded beside it.

On a tiny random model, in one sequence of runs (each is slow on a loaded machine): a re-run with
another top_rate recomputes exactly the stages that read LAPE's neurons, and its outputs equal
those of a fresh run with that top_rate; a stage without a record, or with a corrupt file, is
recomputed; config.json exists only for a complete run.
"""

import json
from pathlib import Path

import pytest

import lapelens.pipeline as pipeline
from lapelens import ActivationStats, ReproduceConfig, reproduce
from lapelens.constants import STAGE_RECORD
from lapelens.errors import LapelensError
from lapelens.stages import StageCache
from tiny import save_schema_1

#: Stages that read LAPE's neurons (directly or through neurons_random) or its top_rate (the sweep marks it) ...
AFTER_LAPE = {
    "neurons_lape",
    "neurons_random",
    "perturb_lape",
    "perturb_random",
    "ses",
    "steer_unconditional",
    "steer_prompted",
    "deactivated_generation",
    "sweep",
}
#: ... and those that do not.
NOT_AFTER_LAPE = {"stats", "neurons_lap", "perturb_lap", "dominance"}
#: Keys of saved JSON that measure time (they differ between two runs of the same computation).
TIMING_KEYS = ("seconds", "tokens_per_second")


def tiny_config(out, model, **overrides):
    settings = dict(
        model=str(model),
        languages=("en", "zh", "fr"),
        methods=("lape", "lap", "random"),
        seq_len=16,
        tokens_per_language=256,
        eval_tokens_per_language=32,
        top_rate=0.1,
        ses_texts=4,
        n_samples=1,
        n_prompts=1,
        max_new_tokens=2,
        unconditional_tokens=2,
        sweep_target="fr",
    )
    return ReproduceConfig(out=str(out), **{**settings, **overrides})


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """Figures are not what this test checks; drawing them (PNG/SVG through Chromium) is slow."""
    monkeypatch.setattr(pipeline, "_write_figure", lambda fig, path: None)


def _files(folder: Path) -> dict[str, object]:
    """Relative path -> content, with the timing keys of JSON files dropped."""
    out = {}
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        if f.suffix == ".json":
            data = json.loads(f.read_text())
            if isinstance(data, dict):
                for key in TIMING_KEYS:
                    data.pop(key, None)
            out[str(f.relative_to(folder))] = data
        else:
            out[str(f.relative_to(folder))] = f.read_bytes()
    return out


def test_stages_are_reused_only_when_computed_from_the_same_settings(tiny_dirs, tmp_path, monkeypatch):
    quiet = lambda line: None  # noqa: E731
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    first = reproduce(tiny_config(run, tiny_dirs["llama"]), log=quiet)
    assert set(first["recomputed"]) == AFTER_LAPE | NOT_AFTER_LAPE
    assert json.loads((run / "config.json").read_text())["top_rate"] == 0.1

    # 1. Another top_rate: exactly the stages that read LAPE's neurons are recomputed, and the log says why.
    lines: list[str] = []
    again = reproduce(tiny_config(run, tiny_dirs["llama"], top_rate=0.2), log=lines.append)
    assert set(again["recomputed"]) == AFTER_LAPE
    assert again["recomputed"]["neurons_lape"] == "top_rate 0.1 -> 0.2"
    assert again["recomputed"]["perturb_lape"] == "its input neurons_lape changed"
    log = "\n".join(lines)
    assert "neurons_lape: computing (top_rate 0.1 -> 0.2)" in log
    assert all(f"{name}: reusing" in log for name in NOT_AFTER_LAPE)

    # ... and the folder then equals a fresh run's with top_rate 0.2, file for file.
    new = reproduce(tiny_config(fresh, tiny_dirs["llama"], top_rate=0.2), log=quiet)
    assert json.dumps(again["perturbation"], sort_keys=True) == json.dumps(new["perturbation"], sort_keys=True)
    rerun_files, fresh_files = _files(run), _files(fresh)
    assert set(rerun_files) == set(fresh_files)
    config_rerun, config_fresh = rerun_files.pop("config.json"), fresh_files.pop("config.json")
    assert config_rerun["top_rate"] == 0.2 and config_rerun["stages"] == config_fresh["stages"]
    assert {k: v for k, v in config_rerun.items() if k != "out"} == {
        k: v for k, v in config_fresh.items() if k != "out"
    }
    for summary in (rerun_files.pop("summary.json"), fresh_files.pop("summary.json")):
        summary.pop("timings_seconds"), summary.pop("recomputed")
    differing = sorted(k for k in fresh_files if rerun_files[k] != fresh_files[k])
    assert not differing, differing

    # 2. A stage without a record, or with a corrupt file, is recomputed; the rest is reused.
    (fresh / "neurons_lap" / STAGE_RECORD).unlink()  # e.g. a folder from a lapelens without stage records
    (fresh / "perturb_lape" / "chunks.csv").write_text("perturbed,evaluated\nnone\n")
    # Statistics saved before schema 2 (layer x neuron x lang) are reused too, read language first.
    save_schema_1(ActivationStats.load(fresh / "stats"), fresh / "stats")
    repaired = reproduce(tiny_config(fresh, tiny_dirs["llama"], top_rate=0.2), log=quiet)
    assert repaired["recomputed"]["neurons_lap"] == "no record of the settings it was computed from"
    assert repaired["recomputed"]["perturb_lape"].startswith("unreadable (")
    # neurons_lap came out the same, so perturb_lap (which reads it) is still valid and reused.
    assert set(repaired["recomputed"]) == {"neurons_lap", "perturb_lape"}
    assert _files(fresh / "perturb_lape") == _files(run / "perturb_lape")
    assert _files(fresh / "neurons_lap") == _files(run / "neurons_lap")  # from the old-layout statistics

    # 3. A run stopped after a changed stage leaves no config.json: the folder claims no complete run,
    #    and the stage it did recompute records what it was computed with.
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lapelens.evaluate.perplexity.perturbation_matrix", stop)
    with pytest.raises(KeyboardInterrupt):
        reproduce(tiny_config(fresh, tiny_dirs["llama"], top_rate=0.3), log=quiet)
    assert not (fresh / "config.json").exists() and not (fresh / "summary.json").exists()
    record = json.loads((fresh / "neurons_lape" / STAGE_RECORD).read_text())
    assert record["inputs"]["settings"] == {"top_rate": 0.3}


def test_stage_records_without_a_model(tmp_path):
    """The stage cache alone, with a toy result: the record decides reuse; a changed setting or input says why."""
    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return value

        return run

    def save(value, path):
        path.mkdir(parents=True)
        (path / "value.json").write_text(json.dumps(value))

    def load(path):
        try:
            return json.loads((path / "value.json").read_text())
        except ValueError as exc:
            raise LapelensError(f"bad value ({exc})") from None

    stages = StageCache(tmp_path, log=lambda line: None)
    assert stages("a", {"settings": {"k": 1}}, compute(1), load, save) == 1
    assert stages("b", {"settings": {}, "depends": {"a": stages.fingerprints["a"]}}, compute(10), load, save) == 10

    again = StageCache(tmp_path, log=lambda line: None)
    assert again("a", {"settings": {"k": 1}}, compute(1), load, save) == 1 and calls == [1, 10]  # reused
    assert again("a", {"settings": {"k": 2}}, compute(2), load, save) == 2
    assert again.recomputed == {"a": "k 1 -> 2"}
    assert again("b", {"settings": {}, "depends": {"a": again.fingerprints["a"]}}, compute(20), load, save) == 20
    assert again.recomputed["b"] == "its input a changed"
    assert json.loads((tmp_path / "b" / STAGE_RECORD).read_text())["fingerprint"] == again.fingerprints["b"]
    assert not list(tmp_path.glob("*.partial"))

    (tmp_path / "b" / "value.json").write_text("{not json")
    third = StageCache(tmp_path, log=lambda line: None)
    assert third("b", {"settings": {}, "depends": {"a": again.fingerprints["a"]}}, compute(30), load, save) == 30
    assert third.recomputed["b"].startswith("unreadable (bad value")
