"""The committed robustness tables (figures/<model>/robustness/) recompute from the firing counts committed
beside them: ``scripts/robustness.py --check`` selects LAPE again for every condition and top rate."""

import subprocess
import sys

import pytest

from tiny import ROOT

FOLDERS = sorted(p.parent for p in (ROOT / "figures").glob("*/robustness/robustness.csv"))


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.parent.name for f in FOLDERS])
def test_the_robustness_table_recomputes_from_its_counts(folder):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "robustness.py"),
            "--model",
            folder.parent.name,
            "--out",
            str(folder),
            "--check",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recomputes from" in done.stdout


def test_a_changed_number_fails_the_check(tmp_path):
    import shutil

    assert FOLDERS, "figures/<model>/robustness/robustness.csv is committed for at least one model"

    copy = tmp_path / FOLDERS[0].parent.name / "robustness"
    shutil.copytree(FOLDERS[0], copy)
    table = (copy / "robustness.csv").read_text().splitlines()
    cells = table[1].split(",")
    cells[-1] = f"{float(cells[-1]) - 0.01:.6f}"  # jaccard_vs_reference of the first row
    (copy / "robustness.csv").write_text("\n".join([table[0], ",".join(cells), *table[2:]]) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "robustness.py"),
            "--model",
            copy.parent.name,
            "--out",
            str(copy),
            "--check",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode != 0
