"""The whole pipeline, once, on a tiny random model: every stage runs, saves, and resumes."""

import json

import pandas as pd

from lapelens import ReproduceConfig, reproduce
from lapelens.cli import main


def test_reproduce_end_to_end_and_resume(tiny_dirs, tmp_path):
    cfg = ReproduceConfig.quick(
        str(tmp_path / "out"),
        model=str(tiny_dirs["llama"]),
        languages=("en", "zh", "fr"),
        seq_len=32,
        tokens_per_language=1024,
        eval_tokens_per_language=256,
        top_rate=0.1,
        ap_sentences=12,
        ap_k=4,
        pv_steps=2,
        ses_texts=6,
        n_samples=3,
        n_prompts=2,
        max_new_tokens=4,
        sweep_target="fr",
    )
    summary = reproduce(cfg)
    out = tmp_path / "out"
    for stage in (
        "stats",
        "neurons_lape",
        "neurons_lap",
        "neurons_lave",
        "neurons_random",
        "neurons_ap",
        "neurons_pv",
        "perturb_lape",
        "perturb_pv",
        "sweep",
        "ses",
        "dominance",
        "steer_unconditional",
        "steer_prompted",
        "deactivated_generation",
        "kojima",
    ):
        assert (out / stage).exists(), stage
    perturbation = pd.read_csv(out / "tables" / "perturbation_summary.csv", index_col=0)
    assert set(perturbation.index) == {"lape", "lap", "lave", "random", "ap", "pv"}
    # Table 3 in the summary agrees with the saved neuron file.
    from lapelens import LanguageNeurons

    lape = LanguageNeurons.load(out / "neurons_lape")
    assert summary["lape_per_language"] == {l: lape.count(l) for l in ("en", "zh", "fr")}
    assert (out / "figures" / "fig2_perturb_lape.html").is_file()
    # Pairs are keyed "en->zh" (not a Python tuple's repr), and the run folder loads as one result.
    saved = json.loads((out / "summary.json").read_text())
    assert "en->zh" in saved["steer_prompted"] and not any(k.startswith("(") for k in saved["steer_prompted"])
    import lapelens

    run = lapelens.load(out)
    assert set(run["perturb"]) == {"lape", "lap", "lave", "random", "ap", "pv"}
    assert json.loads((out / "config.json").read_text())["kind"] == "run"

    # A second run loads every stage instead of recomputing it: same numbers, no timings.
    again = reproduce(cfg)
    assert again["timings_seconds"] == {}
    assert json.dumps(again["perturbation"], sort_keys=True) == json.dumps(summary["perturbation"], sort_keys=True)


def test_reproduce_cli_refuses_unknown_language(tiny_dirs, tmp_path, capsys):
    code = main(["reproduce", "--out", str(tmp_path / "x"), "--model", str(tiny_dirs["llama"]), "--languages", "en,xx"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xx" in err[0]
