"""Bad input is refused up front in one line (exit 2) naming the problem and the fix; saves are atomic;
one default per setting. Each case is one a new user ran into (issue 17)."""

import os
import re
from pathlib import Path

import pytest
import torch

from lapelens import ActivationStats, LanguageNeurons, LapelensError
from lapelens.cli import build_parser, main
from lapelens.constants import PAPER_LANGUAGES, STATS_META, STATS_TENSORS
from lapelens.pipeline import QUICK, ReproduceConfig, validate
from tiny import ROOT, refuse_model_loads


@pytest.fixture
def no_model_load(monkeypatch):
    """Every case below must be refused before a model is loaded (i.e. before any long work)."""
    refuse_model_loads(monkeypatch, "a model was loaded before the input was checked")


def one_line_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


# ---- reproduce: every setting checked before the first stage ---------------------------------
@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--methods", "lape,foo"], ["foo", "--methods", "lape,lap,lave,random,ap,pv"]),
        (["--methods", "LAPE"], ["LAPE", "--methods"]),
        (["--methods", ","], ["--methods is empty"]),
        (["--sweep-target", "xx"], ["--sweep-target xx", "'none'"]),
        (["--top-rate", "0"], ["--top-rate", "(0, 1]"]),
        (["--top-rate", "1.5"], ["--top-rate", "(0, 1]"]),
        (["--eval-tokens-per-language", "-1"], ["--eval-tokens-per-language"]),
        (["--eval-tokens-per-language", "100"], ["--eval-tokens-per-language 100", "--seq-len 256"]),
        (["--tokens-per-language", "0"], ["--tokens-per-language"]),
        (["--languages", "en,zh,en"], ["--languages", "en", "once"]),
        (["--languages", "en"], ["--languages en", "at least two"]),
        (["--languages", "en,xx"], ["xx"]),
        (["--ses-texts", "1"], ["--ses-texts"]),
        (["--n-samples", "0"], ["--n-samples"]),
        (["--steer-scale", "inf"], ["--steer-scale"]),
        (["--device", "banana"], ["--device 'banana'", "cpu"]),
        (["--model", "someorg/some-hub-model"], ["method pv", "local HF folder", "--methods"]),
        (["--parallel", "europarl"], ["--parallel", "embedded"]),
    ],
)
def test_reproduce_refuses_bad_settings_before_any_work(capsys, tmp_path, no_model_load, flags, needles):
    one_line_error(capsys, ["reproduce", "--out", str(tmp_path / "run"), *flags], *needles)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_reproduce_device_cuda_without_cuda(capsys, tmp_path, no_model_load):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(
        capsys,
        ["reproduce", "--out", str(tmp_path / "run"), "--device", "cuda"],
        "--device cuda",
        "no CUDA",
        "--device cpu",
    )


def test_validate_resolves_model_defaults_and_refuses_in_python_too():
    cfg = validate(ReproduceConfig(out="x"))
    assert (cfg.top_rate, cfg.steer_scale, cfg.sweep_target) == (0.1, 8.0, "fr")
    assert validate(ReproduceConfig(out="x", languages=("en", "zh"))).sweep_target == "zh"
    assert validate(ReproduceConfig(out="x", top_rate=0.3, steer_scale=2.0)).top_rate == 0.3
    with pytest.raises(LapelensError, match="top-rate"):
        validate(ReproduceConfig(out="x", top_rate=0.0))
    with pytest.raises(LapelensError, match="at least two"):
        validate(ReproduceConfig(out="x", languages=("en",)))


# ---- --quick: an explicit flag wins, and it says what it changed ------------------------------
def test_quick_keeps_explicit_flags_even_when_equal_to_the_defaults(capsys, tmp_path, no_model_load):
    from lapelens.cli._config import config_from_args, explicit_fields
    from lapelens.cli.reproduce import quick_config
    from lapelens.pipeline import ReproduceConfig

    argv = ["reproduce", "--out", "x", "--quick", "--tokens-per-language", "100000", "--n-samples", "100"]
    args = build_parser().parse_args(argv)
    cfg, line = quick_config(config_from_args(ReproduceConfig, args), explicit_fields(args))
    assert cfg.tokens_per_language == 100_000 and cfg.n_samples == 100  # as given, though equal to the defaults
    assert cfg.eval_tokens_per_language == QUICK["eval_tokens_per_language"] and cfg.ap_k == QUICK["ap_k"]
    assert "--eval-tokens-per-language 8192 -> 4096" in line
    assert "kept as given: --tokens-per-language, --n-samples" in line
    assert "--tokens-per-language 100000 ->" not in line

    # Through the CLI: the line is printed (here before a bad --methods is refused).
    code = main([*argv, "--methods", "lape,foo", "--out", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert code == 2 and "--quick: " in captured.out and "kept as given" in captured.out


# ---- identify, sweep, steer, ses, perturb, collect: the same up front ------------------------
@pytest.fixture
def two_language_stats(tmp_path):
    s = ActivationStats.zeros(("en", "zh"), 2, 8, meta={"model": "toy"})
    s.n[:] = 100
    s.count[:] = torch.randint(0, 100, s.count.shape, generator=torch.Generator().manual_seed(0))
    s.save(tmp_path / "stats")
    return tmp_path / "stats"


def test_identify_refuses_meaningless_selections(capsys, tmp_path, two_language_stats):
    out = str(tmp_path / "n")
    one_line_error(
        capsys,
        ["identify", "--stats", str(two_language_stats), "--top-rate", "0", "--out", out],
        "--top-rate",
        "(0, 1]",
    )
    one_line_error(
        capsys,
        ["identify", "--stats", str(two_language_stats), "--languages", "en", "--out", out],
        "method lape compares languages",
        "at least two",
    )
    one_line_error(
        capsys, ["identify", "--stats", str(two_language_stats), "--filter-rate", "2", "--out", out], "--filter-rate"
    )
    assert not Path(out).exists()
    # lap is defined per language: one language is fine.
    assert (
        main(["identify", "--method", "lap", "--stats", str(two_language_stats), "--languages", "en", "--out", out])
        == 0
    )


def test_identify_top_rate_default_depends_on_the_model(capsys, tmp_path):
    from lapelens.models import embedded_model_dir

    # 2 x 64 neurons: the paper's 1% keeps one (of 2 x 8, none: such a selection is refused)
    s = ActivationStats.zeros(("en", "zh"), 2, 64, meta={"model": "toy"})
    s.n[:] = 100
    s.count[:] = torch.randint(0, 100, s.count.shape, generator=torch.Generator().manual_seed(0))
    s.save(tmp_path / "stats")
    assert main(["identify", "--stats", str(tmp_path / "stats"), "--out", str(tmp_path / "a")]) == 0
    assert "--top-rate 0.01 (the paper's default)" in capsys.readouterr().out
    assert LanguageNeurons.load(tmp_path / "a").meta["settings"]["top_rate"] == 0.01
    s.meta["model"] = str(embedded_model_dir())  # what collect records for the embedded model
    s.save(tmp_path / "emb")
    assert main(["identify", "--stats", str(tmp_path / "emb"), "--out", str(tmp_path / "b")]) == 0
    assert "--top-rate 0.1 (the embedded model's default)" in capsys.readouterr().out
    assert LanguageNeurons.load(tmp_path / "b").meta["settings"]["top_rate"] == 0.1


def test_sweep_refuses_bad_ratios_and_target_before_loading_the_model(
    capsys, tmp_path, two_language_stats, no_model_load
):
    common = ["sweep", "--stats", str(two_language_stats), "--out", str(tmp_path / "s")]
    one_line_error(capsys, [*common, "--target", "en", "--ratios", "0,2"], "--ratios", "[0, 1]")
    one_line_error(capsys, [*common, "--target", "fr"], "--target fr", "en,zh")


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--top-p", "2"], ["--top-p", "(0, 1]"]),
        (["--top-p", "0"], ["--top-p"]),
        (["--temperature", "0"], ["--temperature"]),
        (["--top-k", "0"], ["--top-k"]),
        (["--repetition-penalty", "-1"], ["--repetition-penalty"]),
        (["--device", "banana"], ["--device 'banana'"]),
    ],
)
def test_steer_and_generate_refuse_bad_sampling(capsys, tmp_path, two_language_stats, no_model_load, flags, needles):
    neurons = tmp_path / "n.pth"
    torch.save([[torch.tensor([1])] * 2] * 2, neurons)
    one_line_error(
        capsys,
        ["steer", "--neurons", str(neurons), "--stats", str(two_language_stats), "--out", str(tmp_path / "o"), *flags],
        *needles,
    )
    one_line_error(capsys, ["generate", "--neurons", str(neurons), "--out", str(tmp_path / "o"), *flags], *needles)


def test_mistyped_model_path_is_refused_at_once_not_looked_up_on_the_hub(capsys, tmp_path, monkeypatch, no_model_load):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    for name in ("models/tinyy", "./tinyy", "../nowhere/model", "~/no-such-model-folder", str(tmp_path / "absent")):
        line = one_line_error(
            capsys, ["perturb", "--neurons", "n", "--out", "o", "--model", name], f"--model {name}", "no such folder"
        )
        assert "hub" not in line
    from lapelens.checks import looks_like_path

    assert not looks_like_path("HuggingFaceTB/SmolLM2-135M")  # a hub name (no local folder HuggingFaceTB)
    assert not looks_like_path("smollm2-135m")


def test_non_utf8_corpus_file_is_named(capsys, tmp_path, no_model_load):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("", ".valid"):
        (corpus / f"en{split}.txt").write_text("Open the file.\n", encoding="utf-8")
        (corpus / f"fr{split}.txt").write_bytes(
            "Ouvrez le fichier.\nEnregistrez-le \u00e0 nouveau.\n".encode("latin-1")
        )
    line = one_line_error(
        capsys,
        ["collect", "--corpus", str(corpus), "--out", str(tmp_path / "s")],
        str(corpus / "fr.txt") + ":2",
        "not UTF-8",
        "convert",
    )
    assert "UnicodeDecodeError" not in line
    one_line_error(
        capsys,
        [
            "reproduce",
            "--corpus",
            str(corpus),
            "--languages",
            "en,fr",
            "--methods",
            "lape",
            "--out",
            str(tmp_path / "r"),
        ],
        "fr.valid.txt:2",
        "not UTF-8",
    )


@pytest.mark.parametrize(
    "content, needles",
    [
        ("en,fr\nthe caf\u00e9,le caf\u00e9\nyes,oui\n".encode("latin-1"), ["not UTF-8", "iconv"]),
        (b"", ["is empty"]),
        (b"en\nhello\nworld\n", ["1 language column", "at least two"]),
        (b"en,fr\n", ["no rows"]),
    ],
)
def test_ses_parallel_csv_problems_are_one_line(capsys, tmp_path, no_model_load, content, needles):
    csv = tmp_path / "par.csv"
    csv.write_bytes(content)
    one_line_error(
        capsys,
        ["ses", "--parallel", str(csv), "--n-texts", "2", "--out", str(tmp_path / "o")],
        f"--parallel {csv}",
        *needles,
    )


def test_ses_refuses_one_language(capsys, tmp_path, no_model_load):
    one_line_error(capsys, ["ses", "--languages", "en", "--out", str(tmp_path / "o")], "at least two")


def test_corrupt_perturbation_result_is_one_line(capsys, tmp_path):
    import pandas as pd

    from lapelens.evaluate.perplexity import PerturbationResult

    chunks = pd.DataFrame(
        {
            "perturbed": ["none", "none", "en", "en"],
            "evaluated": ["en"] * 4,
            "chunk": [0, 1, 0, 1],
            "nll": [10.0, 11.0, 12.0, 13.0],
            "tokens": [15] * 4,
        }
    )
    result = PerturbationResult(chunks, {"method": "test"}, n_boot=10)
    folder = tmp_path / "perturb_lape"
    result.save(folder)
    assert main(["perturb", "--show", str(folder)]) == 0
    capsys.readouterr()
    for corrupt in (
        "perturbed,evaluated,chunk,nll,tokens\n",
        "perturbed,evaluated,chunk,nll,tokens\nnone,en,0,1",
        "garbage\n\x00\x01",
        "perturbed,evaluated,chunk,nll,tokens\nnone,en,0,abc,15\n",
    ):
        (folder / "chunks.csv").write_text(corrupt)
        one_line_error(capsys, ["perturb", "--show", str(folder)], str(folder), "corrupt", "again")


# ---- official .pth files: --languages names their entries --------------------------------------
def test_official_pth_languages(tmp_path, tiny_dirs, capsys):
    from lapelens import load_model
    from lapelens.cli._evaluation import load_selection

    model = load_model(tiny_dirs["llama"])
    three = tmp_path / "three.pth"
    torch.save([[torch.tensor([k]), torch.tensor([k + 1])] for k in range(3)], three)
    with pytest.raises(LapelensError, match=r"3 language entries.*--languages a,b,c"):
        load_selection(three, model, None)
    with pytest.raises(LapelensError, match=r"--languages gives 2"):
        load_selection(three, model, ["en", "fr"])
    named = load_selection(three, model, ["fr", "de", "en"])
    assert named.languages == ("fr", "de", "en") and named.layer_indices("de")[1].tolist() == [2]
    assert "note:" not in capsys.readouterr().out

    seven = tmp_path / "seven.pth"
    torch.save([[torch.tensor([k]), torch.tensor([k])] for k in range(7)], seven)
    assumed = load_selection(seven, model, ["fr", "en"])  # a subset of targets, not the file's names
    assert assumed.languages == PAPER_LANGUAGES
    out = capsys.readouterr().out
    assert "note:" in out and "en,zh,fr,es,vi,id,ja" in out and "--languages" in out
    load_selection(seven, model, list("abcdefg"))
    assert "note:" not in capsys.readouterr().out


def test_perturb_cli_reads_a_three_language_pth(tmp_path, tiny_dirs, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    from tiny import TEXTS

    for lang in ("en", "fr", "zh"):
        (corpus / f"{lang}.valid.txt").write_text("\n".join([TEXTS[lang]] * 8), encoding="utf-8")
    pth = tmp_path / "three.pth"
    torch.save([[torch.tensor([k]), torch.tensor([k + 1])] for k in range(3)], pth)
    argv = [
        "perturb",
        "--neurons",
        str(pth),
        "--model",
        str(tiny_dirs["llama"]),
        "--corpus",
        str(corpus),
        "--tokens-per-language",
        "32",
        "--seq-len",
        "16",
        "--n-boot",
        "10",
        "--quiet",
        "--out",
        str(tmp_path / "p"),
    ]
    one_line_error(capsys, argv, "--languages")
    assert main([*argv, "--languages", "zh,en,fr"]) == 0
    from lapelens.evaluate.perplexity import PerturbationResult

    assert PerturbationResult.load(tmp_path / "p").rows == ["none", "zh", "en", "fr"]


# ---- atomic saves -------------------------------------------------------------------------------
def _stats(tokens: int) -> ActivationStats:
    s = ActivationStats.zeros(("en", "zh"), 2, 4, meta={"model": "toy"})
    s.n[:] = tokens
    s.count[:] = tokens // 2
    return s


def test_a_stop_between_tensors_and_metadata_never_mixes_old_and_new(tmp_path, monkeypatch):
    folder = tmp_path / "stats"
    _stats(40_960).save(folder)

    real_write_text = Path.write_text

    def stop_at_metadata(self, *args, **kwargs):  # tensors are written, metadata is not
        if self.name == STATS_META:
            raise KeyboardInterrupt
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", stop_at_metadata)
    with pytest.raises(KeyboardInterrupt):
        _stats(2_048).save(folder)
    monkeypatch.setattr(Path, "write_text", real_write_text)
    old = ActivationStats.load(folder)
    assert old.n.tolist() == [40_960, 40_960] and old.count.max() == 20_480  # all old: tensors and metadata
    assert sorted(p.name for p in folder.iterdir()) == [STATS_META, STATS_TENSORS]  # no leftovers

    real_replace = os.replace

    def stop_at_commit(src, dst):  # new tensors moved in, stopped before the new metadata
        if Path(dst).name == STATS_META:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", stop_at_commit)
    with pytest.raises(KeyboardInterrupt):
        _stats(2_048).save(folder)
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(LapelensError, match="not a lapelens statistics folder"):  # refused, not mixed
        ActivationStats.load(folder)
    _stats(2_048).save(folder)
    assert ActivationStats.load(folder).n.tolist() == [2_048, 2_048]


def test_every_artifact_save_goes_through_the_atomic_helper():
    """Each file a result's ``save`` writes is written into the staging folder of ``lapelens._io``."""
    modules = [
        "stats.py",
        "neurons.py",
        "parameters.py",
        "results.py",
        "evaluate/similarity.py",
        "evaluate/embeddings.py",
        "evaluate/perplexity.py",
        "evaluate/sweep.py",
        "evaluate/generation.py",
    ]
    # .to_json(orient=...) without a path is a string for summary.json, not a file
    writes = re.compile(r"(save_file\(|\.to_csv\(|\.write_text\(|\.to_json\((?!orient=)|torch\.save\(|write_meta\()")
    offenders = []
    for name in modules:
        for n, line in enumerate((ROOT / "lapelens" / name).read_text().splitlines(), 1):
            code = line.split("#")[0]
            if writes.search(code) and "tmp" not in code and "``" not in code:  # ``...``: a docstring's example
                offenders.append(f"{name}:{n}: {line.strip()}")
    assert not offenders, offenders


# ---- one default per setting ----------------------------------------------------------------
def test_one_default_per_setting():
    from lapelens.activations import DEFAULT_SEQ_LEN
    from lapelens.corpus import default_languages_of
    from lapelens.defaults import SEQ_LEN, defaults_for
    from lapelens.models import embedded_model_dir

    assert DEFAULT_SEQ_LEN == SEQ_LEN == ReproduceConfig(out="x").seq_len == 256
    assert default_languages_of("embedded") == list(PAPER_LANGUAGES) == list(ReproduceConfig(out="x").languages)
    assert defaults_for("embedded").top_rate == defaults_for(str(embedded_model_dir())).top_rate == 0.1
    assert defaults_for("embedded").steer_scale == 8.0
    for real in ("smollm2-135m", "gemma-3-270m", "HuggingFaceTB/SmolLM2-135M", "/some/folder"):
        assert (defaults_for(real).top_rate, defaults_for(real).steer_scale) == (0.01, 1.0)
    assert ReproduceConfig(out="x", model="smollm2-135m").resolved().top_rate == 0.01
    assert ReproduceConfig(out="x", model="smollm2-135m").resolved().steer_scale == 1.0


def test_collect_defaults_to_the_paper_languages_where_the_corpus_has_them(tmp_path):
    from lapelens.corpus import default_languages_of

    for lang in ("fr", "en", "de"):
        (tmp_path / f"{lang}.txt").write_text("x\n")
    assert default_languages_of(tmp_path) == ["en", "fr", "de"]  # not all seven: every language it has
