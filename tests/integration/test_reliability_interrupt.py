"""Ctrl-C and SIGTERM keep the work (issue 25): one line, no traceback, exit 130/143, and the same
command resumes to bit-identical statistics."""

import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from lapelens import interrupt
from lapelens.cli import main
from lapelens.constants import CHECKPOINT_FILE, LOCK_FILE, STAGE_RECORD
from lapelens.stats import ActivationStats
from tiny import BATCH_OF_COLLECT, BATCH_OF_GENERATION, TEXTS, slow_cli

SEQ, BATCH, TOKENS = 16, 2, 640  # 20 batches per language


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for lang in ("en", "zh"):
        docs = [f"{TEXTS[lang]} {i}" for i in range(120)]
        (folder / f"{lang}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    return folder


def _collect_argv(tiny_dirs, corpus, out):
    # --checkpoint-every left at its default (300 s): the only checkpoint is the one the interrupt writes
    return [
        "collect",
        "--model",
        str(tiny_dirs["llama"]),
        "--corpus",
        str(corpus),
        "--languages",
        "en,zh",
        "--seq-len",
        str(SEQ),
        "--batch-size",
        str(BATCH),
        "--tokens-per-language",
        str(TOKENS),
        "--quiet",
        "--out",
        str(out),
    ]


def _interrupted(argv, ready: Path, sig: int, after: float = 0.0, slow=BATCH_OF_COLLECT):
    """Run the CLI in a slow child, send ``sig`` once it did one batch (and ``after`` s more)."""
    child = slow_cli(argv, ready, slow)
    time.sleep(after)
    child.send_signal(sig)
    out, err = child.communicate(timeout=300)
    return child.returncode, out, err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_collect_saves_says_so_and_resumes_bit_identical(
    tiny_dirs, corpus, tmp_path, sig, code, capsys, monkeypatch
):
    assert main(_collect_argv(tiny_dirs, corpus, tmp_path / "whole")) == 0
    out = tmp_path / "out"
    returncode, _, err = _interrupted(_collect_argv(tiny_dirs, corpus, out), tmp_path / "ready", sig, after=1.0)
    assert returncode == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    saved = re.fullmatch(
        r"lapelens collect: interrupted; ([\d,]+) tokens saved, re-run the same command to resume", lines[0]
    )
    assert saved, lines
    n_saved = int(saved.group(1).replace(",", ""))
    assert 0 < n_saved < 2 * TOKENS and n_saved % (SEQ * BATCH) == 0  # whole batches, not the whole run
    assert (out / "collect.checkpoint" / CHECKPOINT_FILE.format(rank=0, world=1)).is_file()
    assert not (out / LOCK_FILE).exists()  # released on the way out

    import lapelens.activations as acts

    forwards = []
    real = acts.run_until
    monkeypatch.setattr(acts, "run_until", lambda *a, **k: (forwards.append(1), real(*a, **k)))
    capsys.readouterr()
    assert main(_collect_argv(tiny_dirs, corpus, out)) == 0
    assert "resuming from checkpoint" in capsys.readouterr().err
    assert len(forwards) == (2 * TOKENS - n_saved) // (SEQ * BATCH)  # the saved batches were not run again
    resumed, whole = ActivationStats.load(out), ActivationStats.load(tmp_path / "whole")
    for k in ("n", "count", "act_sum", "act_sq_sum"):
        assert torch.equal(getattr(resumed, k), getattr(whole, k)), k
    assert not (out / "collect.checkpoint").exists()


def test_an_interrupted_reproduce_names_the_saved_stages(tiny_dirs, tmp_path):
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
        "lape,random",
        "--seq-len",
        "32",
        "--tokens-per-language",
        "1024",
        "--eval-tokens-per-language",
        "256",
        "--top-rate",
        "0.1",
        "--sweep-target",
        "none",
        "--ses-texts",
        "6",
        "--n-samples",
        "3",
        "--n-prompts",
        "2",
        "--max-new-tokens",
        "4",
        "--unconditional-tokens",
        "4",
    ]
    ready = tmp_path / "ready"  # the statistics' first batch: the interrupt lands inside the stats stage
    returncode, _, err = _interrupted(argv, ready, signal.SIGINT)
    assert returncode == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]  # after the stage log
    assert re.fullmatch(
        r"lapelens reproduce: interrupted; [\d,]+ tokens saved, no stage finished yet, "
        r"re-run the same command to resume",
        last,
    ), last
    assert main(argv) == 0  # resumes the statistics, then runs the rest
    for stage in ("steer_unconditional", "steer_prompted", "deactivated_generation"):
        (out / stage / STAGE_RECORD).unlink()  # computed again: the interrupt lands in the first of them
    returncode, _, err = _interrupted(argv, tmp_path / "ready2", signal.SIGINT, slow=BATCH_OF_GENERATION)
    assert returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "lapelens reproduce: interrupted; 7 stages saved (stats, neurons_lape, neurons_random, perturb_lape, "
        "perturb_random, ses, dominance), re-run the same command to resume"
    )  # in the order they finished
    assert not (out / "config.json").exists() and not (out / LOCK_FILE).exists()


def test_signals_wait_for_the_end_of_a_deferred_block():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIG_IGN under nohup
    with interrupt.signals_interrupt():
        done = []
        with pytest.raises(interrupt.Interrupted) as caught:
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now, and waited
                done.append("the rest of the batch")
        assert done == ["the rest of the batch"] and caught.value.signum == signal.SIGTERM
        assert interrupt.exit_code(caught.value) == 143
        with pytest.raises(interrupt.Interrupted) as caught:  # outside a deferred block: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            pytest.fail("the interrupt did not come at once")
        assert interrupt.exit_code(caught.value) == 130
        with pytest.raises(interrupt.Interrupted):  # a second signal does not wait
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
                pytest.fail("the second interrupt waited")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # the handlers are put back


def test_an_interrupt_notes_what_was_saved():
    exc = KeyboardInterrupt()
    assert interrupt.summary(exc) == "interrupted; nothing was saved" and interrupt.exit_code(exc) == 130
    interrupt.note(exc, "1,024 tokens saved")
    interrupt.note(exc, "no stage finished yet")
    assert interrupt.summary(exc) == (
        "interrupted; 1,024 tokens saved, no stage finished yet, re-run the same command to resume"
    )
