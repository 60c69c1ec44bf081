"""One writer per output folder (issue 25): a second writer is refused at once in one line naming
the holder, a dead holder's lock is taken over (race-free), torchrun ranks share one lock."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lapelens import LapelensError
from lapelens.cli import main
from lapelens.constants import LOCK_FILE
from lapelens.lock import OutputLock, lock_path
from tiny import ROOT, TEXTS, refuse_model_loads, slow_cli, torchrun

#: A child that takes the lock of argv[1] (as torchrun job argv[2], "" for none), says so, and holds it.
_HOLD = r"""
import sys, time
sys.path.insert(0, {root!r})
from lapelens.lock import OutputLock
lock = OutputLock(sys.argv[1], command="lapelens reproduce", argv=["lapelens", "reproduce"], job=sys.argv[2] or None)
try:
    lock.acquire()
except Exception as exc:
    print("busy", exc, flush=True)
    sys.exit(3)
print("got", flush=True)
time.sleep(float(sys.argv[3]))
lock.release()
"""


def _hold(folder: Path, job: str = "", seconds: float = 600) -> subprocess.Popen:
    """A process holding the lock of ``folder`` (returned once it holds it)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(root=str(ROOT)), str(folder), job, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "got", child.stderr.read()
    return child


def _stop(child: subprocess.Popen) -> None:
    child.kill()
    child.wait(timeout=30)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def no_model_load(monkeypatch):
    refuse_model_loads(monkeypatch, "a model was loaded although the output folder is in use")


def test_two_reproduce_into_one_folder_the_second_is_refused_and_the_first_goes_on(tiny_dirs, tmp_path):
    """The issue's check: the second exits 2 within 30 s, in one line naming the first's pid."""
    out = tmp_path / "run"
    argv = [
        "reproduce",
        "--quick",
        "--methods",
        "lape,random",
        "--out",
        str(out),
        "--model",
        str(tiny_dirs["llama"]),
        "--languages",
        "en,zh",
        "--seq-len",
        "32",
        "--tokens-per-language",
        "1024",
    ]
    first = slow_cli(argv, tmp_path / "ready")  # running, inside its statistics
    try:
        start = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "lapelens", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        )
        assert time.monotonic() - start < 30
        assert second.returncode == 2 and second.stdout == ""
        assert second.stderr.splitlines() == [second.stderr.strip()], second.stderr
        assert second.stderr.startswith(
            f"lapelens reproduce: error: {out} is in use by lapelens reproduce, pid {first.pid}, started "
        )
        time.sleep(1)
        assert first.poll() is None and (out / LOCK_FILE).is_file()  # the first goes on
        assert json.loads((out / LOCK_FILE).read_text())["argv"] == ["lapelens", *argv]
    finally:
        first.kill()
        first.communicate(timeout=60)


def test_the_lock_records_its_holder_and_goes_away(tmp_path):
    out = tmp_path / "runs" / "x"
    with OutputLock(out, command="lapelens collect", argv=["lapelens", "collect", "--out", str(out)]) as lock:
        record = json.loads((out / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "lapelens collect"
        assert record["argv"] == ["lapelens", "collect", "--out", str(out)] and record["job"] is None
        assert abs(record["started"] - time.time()) < 60 and record["host"]
        assert lock.file == out / LOCK_FILE
    # a command that stopped before writing anything leaves nothing, not even the folders it made
    assert not (tmp_path / "runs").exists()
    out.mkdir(parents=True)
    (out / "result.csv").write_text("a\n")
    with OutputLock(out, command="lapelens collect"):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["result.csv"]
    assert lock_path(tmp_path / "mask.pth", folder=False) == tmp_path / f".mask.pth{LOCK_FILE}"


def test_a_second_writer_is_refused_at_once_and_touches_nothing(tmp_path, capsys, no_model_load):
    out = tmp_path / "run"
    child = _hold(out)
    try:
        (out / "stats").mkdir()
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
        start = time.monotonic()
        code = main(["reproduce", "--out", str(out), "--quick", "--methods", "lape,random"])
        err = capsys.readouterr().err.strip().splitlines()
        assert time.monotonic() - start < 30
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(
            f"lapelens reproduce: error: {out} is in use by lapelens reproduce, pid {child.pid}, started "
        )
        assert err[0].endswith("; wait for it or choose another --out")
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # reproduce's clean-up did not run
        # A folder inside it is refused too (figures writes RUN_DIR/figures by default), and a file output.
        assert main(["figures", str(out)]) == 2
        assert f"{out} is in use by lapelens reproduce, pid {child.pid}" in capsys.readouterr().err
        assert main(["identify", "--stats", str(out / "stats"), "--out", str(out / "mask.pth")]) == 2
        assert f"pid {child.pid}" in capsys.readouterr().err
        assert child.poll() is None  # the holder goes on
    finally:
        _stop(child)


def test_an_output_that_cannot_hold_a_lock_is_refused_in_one_line(tmp_path, capsys, no_model_load):
    (tmp_path / "file").write_text("")
    for out, needle in [
        (tmp_path / "file", "--out {} is a file, not a folder: choose another --out"),
        (tmp_path / "file" / "sub", "cannot write into {} (Not a directory)"),
    ]:
        assert main(["collect", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle.format(out) in err[0], err


def test_a_dead_holders_lock_is_taken_over_with_a_note(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = _dead_pid()
    (out / LOCK_FILE).write_text(
        json.dumps(
            {
                "pid": dead,
                "host": os.uname().nodename,
                "command": "lapelens collect",
                "argv": [],
                "started": time.time() - 60,
                "job": None,
            }
        )
    )
    notes = []
    with OutputLock(out, command="lapelens reproduce", note=notes.append):
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"took over the lock of {out} from lapelens collect, pid {dead}" in notes[0]
    assert "no longer running" in notes[0]
    assert not (out / LOCK_FILE).exists()


def test_a_killed_holder_leaves_a_lock_that_the_next_writer_takes(tmp_path):
    out = tmp_path / "run"
    child = _hold(out)
    child.kill()  # kill -9: no chance to remove the file
    child.wait(timeout=30)
    assert (out / LOCK_FILE).exists()
    notes = []
    with OutputLock(out, command="lapelens collect", note=notes.append):
        pass
    assert len(notes) == 1 and f"pid {child.pid}" in notes[0]


def test_takeover_of_a_stale_lock_is_race_free(tmp_path):
    """Eight processes start at once on one stale lock: exactly one gets it, the others name it."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text(
        json.dumps(
            {
                "pid": _dead_pid(),
                "host": os.uname().nodename,
                "command": "lapelens x",
                "argv": [],
                "started": 0,
                "job": None,
            }
        )
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _HOLD.format(root=str(ROOT)), str(out), "", "8"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [c.communicate(timeout=300)[0].strip() for c in children]
    winners = [c.pid for c, r in zip(children, results) if r == "got"]
    assert len(winners) == 1, results
    busy = [r for r in results if r.startswith("busy")]
    assert len(busy) == 7 and all(f"pid {winners[0]}" in r for r in busy), results


def test_torchrun_ranks_of_one_job_share_the_lock_and_others_are_refused(tmp_path):
    out = tmp_path / "run"
    child = _hold(out, job="torchrun job-a:127.0.0.1:1234")
    try:
        same = OutputLock(out, command="lapelens collect", job="torchrun job-a:127.0.0.1:1234", rank=1)
        same.acquire()  # rank 1 joins its rank 0's lock ...
        same.release()  # ... and never removes it
        assert (out / LOCK_FILE).exists()
        other = OutputLock(out, command="lapelens collect", job="torchrun job-b:127.0.0.1:999", rank=1)
        with pytest.raises(LapelensError, match=f"in use by lapelens reproduce, pid {child.pid}"):
            other.acquire()
    finally:
        _stop(child)


def test_torchrun_collect_takes_one_lock_for_both_ranks(tiny_dirs, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang in ("en", "zh"):
        (corpus / f"{lang}.txt").write_text("\n".join(f"{TEXTS[lang]} {i}" for i in range(40)) + "\n", encoding="utf-8")
    out = tmp_path / "stats"
    args = (
        "-m",
        "lapelens",
        "collect",
        "--model",
        str(tiny_dirs["llama"]),
        "--corpus",
        str(corpus),
        "--languages",
        "en,zh",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--tokens-per-language",
        "128",
        "--out",
        str(out),
        "--quiet",
    )
    child = _hold(out)
    try:
        refused = torchrun(*args)
    finally:
        _stop(child)
    assert refused.returncode != 0  # (torchrun itself then reports the failed rank with a traceback)
    assert f"lapelens collect: error: {out} is in use by lapelens reproduce, pid {child.pid}" in refused.stderr
    run = torchrun(*args)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "summed over 2 processes" in run.stdout and "took over" in run.stderr  # the killed holder's lock
    assert not (out / LOCK_FILE).exists()
