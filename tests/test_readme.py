"""The README's result sections are generated from the run files (figures/<model>/, the embedded
model's training summary) and must agree with them: `scripts/readme_results.py --check`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import readme_results  # noqa: E402


def test_readme_results_match_the_run_files():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", list(readme_results.BLOCKS))
def test_check_fails_when_a_number_is_edited(name):
    readme = (ROOT / "README.md").read_text()
    marker = f"<!-- results:{name} -->\n"
    assert marker in readme, f"the README has no generated {name} section"
    edited = readme.replace(marker, marker + "99.9% ", 1)
    assert readme_results.rewrite(edited, ROOT) != edited
    assert readme_results.rewrite(readme, ROOT) == readme


def test_a_removed_section_is_reported():
    readme = (ROOT / "README.md").read_text()
    assert readme_results.missing(readme) == []
    assert readme_results.missing(readme.replace("<!-- /results:embedded -->", "")) == ["embedded"]


def test_embedded_section_follows_the_csv(tmp_path):
    """The embedded numbers are read from figures/embedded/, not kept in the script: edit a CSV
    (in a copy) and the generated text changes with it."""
    shutil.copytree(ROOT / "figures" / "embedded", tmp_path / "figures" / "embedded",
                    ignore=shutil.ignore_patterns("*.png", "*.svg", "explorer.html", "plotly.min.js"))
    table = tmp_path / "figures" / "embedded" / "lape_per_language.csv"
    table.write_text(table.read_text().replace("zh,284,", "zh,283,"))
    block = readme_results.render_embedded(tmp_path / "figures" / "embedded")
    assert "zh 283," in block and "zh 284," not in block
    assert block != readme_results.render_embedded(ROOT / "figures" / "embedded")
