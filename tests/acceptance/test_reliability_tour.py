"""The README's Python tour, exactly as the README shows it, runs as a script and prints what it
computes (issue 25: it printed nothing and repeated a 36-minute collection)."""

import os
import re
import subprocess
import sys

from tiny import ROOT


def tour_block() -> str:
    """The ```python block of the README's "The pipeline" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## The pipeline\n") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"\n```python\n(.*?)\n```\n", section, flags=re.S)
    assert len(blocks) == 1, "the section should hold one Python block: the tour"
    return blocks[0]


def test_the_readme_tour_runs_as_a_script_and_prints_its_results(tmp_path):
    code = tour_block()
    assert "tokens_per_language=8192" in code  # a small budget, said beside it
    (tmp_path / "tour.py").write_text(code, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "tour.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    # Table 3: a row per language with its count and share
    for lang in ("en", "zh", "fr", "es", "vi", "id", "ja"):
        assert re.search(rf"^{lang}\s+\d+\s+0\.\d+$", out, flags=re.M), (lang, out)
    assert re.search(r"^layer\s*$", out, flags=re.M) and re.search(r"^7(\s+\d+){7}$", out, flags=re.M)
    assert "p_zh" in out and "entropy" in out
    losses = dict(re.findall(r"^(zh|en) loss ([\d.]+ -> [\d.]+) with the zh neurons deactivated$", out, flags=re.M))
    rise = {lang: float(b) - float(a) for lang, (a, b) in ((k, v.split(" -> ")) for k, v in losses.items())}
    assert set(rise) == {"zh", "en"} and rise["zh"] > rise["en"] > -0.01  # zh's neurons matter most for zh
    assert re.search(r"^steered to ja: '.+'$", out, flags=re.M)
    assert "round trip: True" in out and (tmp_path / "mask.pth").is_file()
