"""The README's real-model results are generated from figures/<model>/ and must agree with them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_results_match_the_run_files():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_check_fails_when_a_number_is_edited(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_results

    readme = (ROOT / "README.md").read_text()
    marker = "<!-- results:smollm2-135m -->\n"
    assert marker in readme, "the README has no generated SmolLM2 section"
    edited = readme.replace(marker, marker + "99.9% ", 1)
    assert readme_results.rewrite(edited, ROOT) != edited
    assert readme_results.rewrite(readme, ROOT) == readme
