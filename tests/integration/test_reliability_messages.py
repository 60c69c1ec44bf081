"""Messages that pointed the wrong way or said nothing (issue 25): each now names the cause and the
fix in one line (exit 2), before any model is loaded."""

import pytest
import torch

from lapelens import ActivationStats, LanguageNeurons
from lapelens.cli import build_parser, main
from lapelens.pipeline import METHOD_NAMES
from lapelens.pretrained import PRETRAINED
from tiny import refuse_model_loads


@pytest.fixture
def no_model_load(monkeypatch):
    refuse_model_loads(monkeypatch, "a model was loaded before the input was checked")


def one_line_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


@pytest.fixture
def stats_folder(tmp_path):
    """2 layers x 8 neurons; en fires neurons 0-3 always, zh 4-7 always, ja each one in ten tokens. With
    --filter-rate 0.5 and --activation-bar-ratio 0.5 LAPE's thresholds are p = 0.1: the en and zh neurons
    pass them, ja has none."""
    count = torch.zeros(3, 2, 8, dtype=torch.int64)
    count[0, :, :4] = 100
    count[1, :, 4:] = 100
    count[2] = 10
    stats = ActivationStats(
        ("en", "zh", "ja"), torch.tensor([100, 100, 100]), count, count.double(), count.double(), meta={"model": "tiny"}
    )
    stats.save(tmp_path / "run" / "stats")
    return tmp_path / "run" / "stats"


def test_reproduce_blames_the_default_parallel_corpus_not_the_monolingual_one(capsys, tmp_path, no_model_load):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang in ("en", "sw"):
        for split in ("train", "valid"):
            (corpus / f"{lang}.{split}.txt").write_text(f"some text in {lang}\n", encoding="utf-8")
    line = one_line_error(
        capsys,
        [
            "reproduce",
            "--out",
            str(tmp_path / "x"),
            "--corpus",
            str(corpus),
            "--languages",
            "en,sw",
            "--methods",
            "lape",
        ],
        "--parallel embedded (the default",
        "has no sw",
        "pass --parallel flores",
    )
    assert "the embedded corpus" not in line
    assert not (tmp_path / "x").exists()  # refused before anything was written
    # a language FLORES does not know either: the only fix is to leave it out
    (corpus / "xx.train.txt").write_text("text\n")
    (corpus / "xx.valid.txt").write_text("text\n")
    one_line_error(
        capsys,
        [
            "reproduce",
            "--out",
            str(tmp_path / "x"),
            "--corpus",
            str(corpus),
            "--languages",
            "en,xx",
            "--methods",
            "lape",
        ],
        "has no xx",
        "leave xx out of --languages",
    )


def test_reproduce_on_a_named_model_says_the_command_that_works(capsys, tmp_path, no_model_load):
    others = ",".join(m for m in METHOD_NAMES if m != "pv")
    one_line_error(
        capsys,
        ["reproduce", "--out", str(tmp_path / "x"), "--model", "smollm2-135m"],
        "method pv",
        "local HF folder",
        "by default",
        f"add --methods {others}",
    )
    one_line_error(
        capsys,
        ["reproduce", "--out", str(tmp_path / "x"), "--model", "smollm2-135m", "--methods", "pv"],
        "pass a local HF folder as --model",
    )


@pytest.mark.parametrize("command", ["reproduce", "collect", "perturb", "steer"])
def test_help_lists_the_named_models_and_gguf(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    help_text = " ".join(sub.format_help().split())
    assert len(PRETRAINED) >= 3
    for name in PRETRAINED:
        assert name in help_text, name
    assert "a .gguf file" in help_text and "'embedded'" in help_text and "local HF folder" in help_text


def test_identify_on_a_run_folder_names_its_statistics(capsys, stats_folder, tmp_path):
    run = stats_folder.parent
    one_line_error(
        capsys,
        ["identify", "--stats", str(run), "--out", str(tmp_path / "n")],
        f"--stats {run} is a run folder",
        f"pass --stats {stats_folder}",
    )
    for command in (["sweep", "--target", "en"], ["steer", "--neurons", str(tmp_path / "n")]):
        one_line_error(
            capsys, [*command, "--stats", str(run), "--out", str(tmp_path / "o")], f"pass --stats {stats_folder}"
        )


def test_identify_refuses_a_rate_that_keeps_no_neuron(capsys, stats_folder, tmp_path):
    out = tmp_path / "n"
    one_line_error(
        capsys,
        ["identify", "--stats", str(stats_folder), "--out", str(out), "--top-rate", "1e-9"],
        "--top-rate 1e-09 keeps round(1e-09 x 16) = 0 of the model's 16 neurons",
        "at least 0.0625",
    )
    assert not out.exists()
    assert (
        main(
            [
                "identify",
                "--stats",
                str(stats_folder),
                "--out",
                str(out),
                "--top-rate",
                "0.0625",
                "--filter-rate",
                "0.5",
                "--activation-bar-ratio",
                "0.5",
            ]
        )
        == 0
    )
    assert LanguageNeurons.load(out).mask.sum() == 1


def test_identify_refuses_an_empty_selection_and_warns_about_an_empty_language(capsys, stats_folder, tmp_path):
    out = tmp_path / "n"
    one_line_error(
        capsys,
        ["identify", "--stats", str(stats_folder), "--out", str(out), "--method", "lap", "--threshold", "1"],
        "method lap selected no neurons for any language",
        "nothing was written",
        "loosen its options",
    )
    assert not out.exists()
    capsys.readouterr()
    assert (
        main(
            [
                "identify",
                "--stats",
                str(stats_folder),
                "--out",
                str(out),
                "--top-rate",
                "1",
                "--filter-rate",
                "0.5",
                "--activation-bar-ratio",
                "0.5",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: method lape selected no neurons for ja (written as empty sets)."]
    neurons = LanguageNeurons.load(out)
    assert neurons.count("ja") == 0 and neurons.count("en") == neurons.count("zh") == 8


def test_explore_says_which_part_of_the_run_is_missing(capsys, stats_folder, tmp_path, no_model_load):
    run = stats_folder.parent
    page = tmp_path / "page.html"
    one_line_error(
        capsys,
        ["explore", str(run), "--out", str(page)],
        f"{run} has no config.json",
        "did not finish",
        "re-run the same command",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(
        capsys,
        ["explore", str(empty), "--out", str(page)],
        f"{empty} has no stats/",
        f"lapelens reproduce --out {empty}",
    )
    one_line_error(capsys, ["explore", str(tmp_path / "nowhere"), "--out", str(page)], "does not exist")
    assert not page.exists()
