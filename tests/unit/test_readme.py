"""The generated result blocks of the README and the docs (``<!-- results:NAME -->``) are rendered from the
run files (figures/<model>/, the embedded model's training summary) and must agree with them:
`scripts/readme_results.py --check`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tiny import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import readme_results  # noqa: E402


def test_generated_blocks_match_the_run_files():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_every_file_with_blocks_is_checked():
    assert set(readme_results.FILES) == {"README.md", "docs/results.md", "docs/embedded-model.md"}
    assert readme_results.BLOCKS["summary"].file == "README.md"


@pytest.mark.parametrize("name", list(readme_results.BLOCKS))
def test_check_fails_when_a_number_is_edited(name):
    file = readme_results.BLOCKS[name].file
    text = (ROOT / file).read_text(encoding="utf-8")
    marker = f"<!-- results:{name} -->\n"
    assert marker in text, f"{file} has no generated {name} block"
    edited = text.replace(marker, marker + "99.9% ", 1)
    assert readme_results.rewrite(edited, ROOT, file) != edited
    assert readme_results.rewrite(text, ROOT, file) == text


def test_a_removed_block_is_reported():
    for file in readme_results.FILES:
        assert readme_results.missing((ROOT / file).read_text(encoding="utf-8"), file) == []
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert readme_results.missing(results.replace("<!-- /results:embedded -->", ""), "docs/results.md") == ["embedded"]


def test_embedded_section_follows_the_csv(tmp_path):
    """The embedded numbers are read from figures/embedded/, not kept in the script: edit a CSV
    (in a copy) and the generated text changes with it."""
    shutil.copytree(
        ROOT / "figures" / "embedded",
        tmp_path / "figures" / "embedded",
        ignore=shutil.ignore_patterns("*.png", "*.svg", "explorer*", "plotly.min.js"),
    )
    table = tmp_path / "figures" / "embedded" / "tables" / "lape_per_language.csv"
    table.write_text(table.read_text().replace("zh,284,", "zh,283,"))
    block = readme_results.render_embedded(tmp_path / "figures" / "embedded")
    assert "zh 283," in block and "zh 284," not in block
    assert block != readme_results.render_embedded(ROOT / "figures" / "embedded")


def _summary_row(table: str, label: str) -> list[str]:
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_summary_table_by_hand(tmp_path):
    """The README's table from a made-up summary.json, worked out by hand; a model without a folder is 'not run';
    a standardized ses.csv under tables/ is found and its peak gap reported."""
    folder = tmp_path / "figures" / "embedded"
    (folder / "tables").mkdir(parents=True)
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "lape_per_language": {"en": 10, "zh": 20},
                # 7 layers cut 3, 2, 2: (1 + 2 + 3) / 40, (4 + 6) / 40, (10 + 14) / 40
                "lape_per_layer": {str(i): v for i, v in enumerate([1, 2, 3, 4, 6, 10, 14])},
                "perturbation": {"lape": {"diag_mean_relative": 0.30}, "random": {"diag_mean_relative": 0.02}},
            }
        )
    )
    (folder / "tables" / "ses.csv").write_text(
        "layer,mean,mismatched,gap,retrieval\n0,0.2,0.0,0.2,0.1\n1,0.5,0.1,0.4,0.3\n2,0.3,0.0,0.3,0.2\n"
    )
    table = readme_results.render_summary(tmp_path)
    assert _summary_row(table, readme_results.SUMMARY_MODELS["embedded"])[1:] == [
        "30",
        "+30.0% vs +2.0% (15.0×)",
        "15% / 25% / 60%",
        "0.40 at layer 1 of 0–2",
    ]
    for name in ("smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b"):
        assert _summary_row(table, readme_results.SUMMARY_MODELS[name])[1] == "not run"
    assert readme_results.render("qwen2.5-coder-0.5b", tmp_path / "figures" / "qwen2.5-coder-0.5b").startswith(
        "Not run"
    )


def test_robustness_block_by_hand(tmp_path):
    assert readme_results.render_robustness(tmp_path).startswith("No robustness run")
    folder = tmp_path / "figures" / "smollm2-135m" / "robustness"
    folder.mkdir(parents=True)
    (folder / "robustness.csv").write_text(
        "condition,top_rate,text,tokens_per_language,parts,pairs,first_third,middle_third,last_third,first_layer,"
        "last_layer,jaccard_vs_reference\nhelp 32k,0.01,help,32768,help_0_8k+help_8k_32k,1234,0.05,0.1,0.85,0.004,0.2,1.0\n"
    )
    block = readme_results.render_robustness(tmp_path)
    assert "| help 32k | 0.01 | 1,234 | 5% / 10% / 85% | 0.4% | 20.0% | 1.00 |" in block


def test_a_flat_folder_renders_the_same_block(tmp_path):
    """The layout of older published folders (every table at the top, the LAPE matrix as
    ``perturb_lape_relative[_low|_high].csv``) renders the block a run's layout does."""
    import pandas as pd

    source = ROOT / "figures" / "smollm2-135m"
    folder = tmp_path / "smollm2-135m"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.png", "*.svg", "*.html", "*.js", "*.pth"))
    for csv in (folder / "tables").glob("*.csv"):
        csv.rename(folder / csv.name)
    (folder / "tables").rmdir()
    table = pd.read_csv(folder / "perturb_lape" / "table.csv")
    table = table[table["perturbed"] != "none"]
    for column in ("relative", "relative_low", "relative_high"):
        table.pivot(index="perturbed", columns="evaluated", values=column).to_csv(folder / f"perturb_lape_{column}.csv")
    (folder / "perturb_lape" / "table.csv").unlink()
    assert readme_results.render("smollm2-135m", folder) == readme_results.render("smollm2-135m", source)
