"""Figures: offline HTML, PNG and SVG export, a real headless Chromium with the network blocked,
and ``lapelens figures RUN_DIR`` redrawing a run from its saved results."""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from lapelens.cli import main
from lapelens.errors import LapelensError
from lapelens.evaluate import figures_of
from lapelens.evaluate.perplexity import NONE
from lapelens.figures import export, find_browser, write_figure, write_figures
from lapelens.figures.perturbation import cell_text, colour_range, compare_figure
from lapelens.figures.style import model_label, signed_log
from lapelens.run import Run
from tiny import RUN_LANGS as LANGS
from tiny import fake_perturbation, fake_run, save_run

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="PNG/SVG export and the browser tests need Chromium: apt-get install chromium (.ci/run installs it)",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_run(fake_run(), tmp_path_factory.mktemp("run"))


def plain(x):
    """A figure dict with numpy arrays as lists, so two figures compare value by value."""
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


# ---- file checks -------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    """Decode a PNG's chunks (CRC checked, image data inflated to the size the header promises)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = header[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    assert len(zlib.decompress(idat)) == height * (1 + width * channels * depth // 8)
    return width, height


class _Resources(HTMLParser):
    """Every URL a page would load: script src, link href, img src."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in {"script": ("src",), "link": ("href",), "img": ("src",), "iframe": ("src",)}.get(tag, ()):
            if attrs.get(key):
                self.urls.append(attrs[key])


def loaded_urls(html: Path) -> list[str]:
    parser = _Resources()
    parser.feed(html.read_text())
    return parser.urls


# ---- (a) export ------------------------------------------------------------------------------------
@needs_browser
def test_write_figure_html_png_svg(tmp_path):
    fig = go.Figure(
        go.Heatmap(z=[[1, 2], [3, 4]], text=[["a", "b"], ["c", "d"]], texttemplate="%{text}"),
        layout={"width": 420, "height": 310, "title": "t"},
    )
    written = write_figure(fig, tmp_path / "out" / "heat.html")  # the suffix is optional and replaced
    assert sorted(p.name for p in written) == ["heat.html", "heat.png", "heat.svg"]
    assert png_size(tmp_path / "out" / "heat.png") == (420 * export.PNG_SCALE, 310 * export.PNG_SCALE)
    svg = ET.parse(tmp_path / "out" / "heat.svg").getroot()
    assert svg.tag.endswith("svg") and (svg.get("width"), svg.get("height")) == ("420", "310")
    assert {t.text for t in svg.iter() if t.tag.endswith("text")} >= {"a", "b", "c", "d"}
    assert (tmp_path / "out" / export.PLOTLY_JS).stat().st_size > 1_000_000
    # A figure without a size gets plotly's default one.
    write_figure(go.Figure(go.Bar(y=[1, 2])), tmp_path / "out" / "bar")
    assert png_size(tmp_path / "out" / "bar.png") == (export.DEFAULT_WIDTH * 2, export.DEFAULT_HEIGHT * 2)


@needs_browser
def test_the_same_figure_renders_to_the_same_svg(tmp_path):
    # plotly draws random ids (defs-3f9a1c, clip..., a colorbar class per trace uid) into its SVG
    figs = {
        "heat": go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])),
        "bars": go.Figure([go.Bar(name="a", y=[1, 2]), go.Bar(name="b", y=[2, 1])]),
    }
    write_figures(figs, tmp_path / "one", formats=("svg",))
    write_figures(figs, tmp_path / "two", formats=("svg",))
    for name in figs:
        one = (tmp_path / "one" / f"{name}.svg").read_text()
        assert one == (tmp_path / "two" / f"{name}.svg").read_text(), name
        ids = re.findall(r'\bid="([^"]+)"', one)
        assert ids and all(i.startswith(f"{name}-") for i in ids), name
        # every reference points at an id of the file
        refs = re.findall(r"url\(['\"]?#([^'\")]+)", one)
        assert refs and set(refs) <= set(ids), name


def test_no_browser_is_one_clear_error_and_html_is_still_written(tmp_path, monkeypatch, run_dir, capsys):
    monkeypatch.setattr(export, "find_browser", lambda: None)
    with pytest.raises(LapelensError) as err:
        write_figure(go.Figure(go.Bar(y=[1])), tmp_path / "f")
    message = str(err.value)
    assert "\n" not in message and "apt-get install chromium" in message
    assert (tmp_path / "f.html").is_file() and not (tmp_path / "f.png").exists()
    assert main(["figures", str(run_dir), "--out", str(tmp_path / "figs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "apt-get install chromium" in lines[0]
    assert (tmp_path / "figs" / "fig2_perturb_lape.html").is_file()


def test_html_loads_nothing_from_the_network_and_plotly_js_is_the_installed_one(tmp_path):
    from plotly.offline import get_plotlyjs

    (tmp_path / export.PLOTLY_JS).write_text("stale copy from another plotly")
    figs = figures_of(fake_run())
    written = write_figures(figs, tmp_path, formats=("html",))
    assert len(written) == len(figs) == 11
    for html in written:
        assert loaded_urls(html) == [export.PLOTLY_JS], html.name
        assert "http://" not in html.read_text() and "https://" not in html.read_text(), html.name  # no URL at all
    assert (tmp_path / export.PLOTLY_JS).read_text() == get_plotlyjs()


# ---- (b) the pages in a real browser, offline --------------------------------------------------
@needs_browser
def test_pages_render_in_headless_chromium_with_the_network_blocked(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    run = fake_run()
    figs = figures_of(run)
    write_figures(figs, tmp_path, formats=("html",))
    lape_matrix = run["perturb"]["lape"].value("relative").drop(index=NONE) * 100
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=BROWSER,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            for name in figs:
                page = browser.new_page()
                blocked, errors = [], []

                def route(r, blocked=blocked):
                    if r.request.url.startswith("file://"):
                        r.continue_()
                    else:
                        blocked.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto((tmp_path / f"{name}.html").as_uri())
                page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
                assert page.locator(".js-plotly-plot .main-svg").count() >= 1, name
                assert (blocked, errors) == ([], []), name
                if name == "fig2_perturb_lape":  # the cells' numbers are drawn, as in Fig. 2
                    drawn = set(page.locator(".js-plotly-plot text").all_text_contents())
                    assert {cell_text(v) for v in lape_matrix.to_numpy().ravel()} <= drawn
                page.close()
        finally:
            browser.close()


# ---- (c) lapelens figures RUN_DIR -------------------------------------------------------------------
def test_run_figures_equal_the_figures_of_the_results_before_saving(run_dir):
    direct = figures_of(fake_run())
    again = Run(run_dir).figures()
    assert (
        list(again)
        == list(direct)
        == [
            "fig5_layers",
            "fig2_perturb_lape",
            "fig2_perturb_random",
            "fig3_perturb_methods",
            "fig4_sweep",
            "fig6_ses",
            "fig7_dominance",
            "steer_unconditional",
            "steer_prompted",
            "deactivated_generation",
            "kojima",
        ]
    )
    for name in direct:
        assert plain(again[name].to_dict()) == plain(direct[name].to_dict()), name


@needs_browser
def test_figures_cli_writes_every_figure_as_the_direct_one(run_dir, tmp_path, capsys):
    assert main(["figures", str(run_dir), "--out", str(tmp_path / "cli")]) == 0
    assert "wrote 33 files (11 figures" in capsys.readouterr().out
    direct = figures_of(fake_run())
    write_figures(direct, tmp_path / "direct", formats=("html",))
    for name, fig in direct.items():
        # Same figure JSON and a fixed div id: the regenerated page is byte for byte the direct one.
        assert (tmp_path / "cli" / f"{name}.html").read_bytes() == (
            tmp_path / "direct" / f"{name}.html"
        ).read_bytes(), name
        width, height = export.image_size(fig)
        assert png_size(tmp_path / "cli" / f"{name}.png") == (width * export.PNG_SCALE, height * export.PNG_SCALE), name
        assert ET.parse(tmp_path / "cli" / f"{name}.svg").getroot().get("width") == str(width), name


def test_figures_draw_only_the_run_s_methods_and_stages(tmp_path):
    run = fake_run()
    folder = save_run(run, tmp_path / "run", methods=("lape",))  # perturb_random is a leftover
    config = json.loads((folder / "config.json").read_text())
    del config["stages"]["sweep"]  # a sweep folder the run did not compute
    (folder / "config.json").write_text(json.dumps(config))
    names = set(Run(folder).figures())
    assert "fig2_perturb_lape" in names and "fig2_perturb_random" not in names and "fig4_sweep" not in names
    assert "kojima" not in names  # Kojima needs AP, which this run did not use


def test_figures_cli_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["figures", str(tmp_path / "missing")]) == 2
    assert main(["figures", str(tmp_path), "--formats", "html"]) == 2
    assert main(["figures", str(tmp_path), "--formats", "gif"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "does not exist" in errors[0] and "no saved result" in errors[1] and "gif" in errors[2]


# ---- (d) what the figures show ----------------------------------------------------------------------
def test_heatmap_cells_carry_the_matrix_values():
    result = fake_perturbation("lape", 0)
    fig = result.figure()
    trace = fig.data[0]
    matrix = result.value("relative").drop(index=NONE) * 100
    assert list(trace.y) == list(matrix.index) == list(LANGS) and list(trace.x) == list(LANGS)
    # the colour is the signed log of the change in %; the number in the cell is the change itself
    np.testing.assert_allclose(
        np.asarray(trace.z), np.sign(matrix.to_numpy()) * np.log10(1 + np.abs(matrix.to_numpy()))
    )
    assert trace.texttemplate == "%{text}"
    assert [list(r) for r in trace.text] == [[cell_text(v) for v in row] for row in matrix.to_numpy()]
    assert (cell_text(12.345), cell_text(-0.04), cell_text(-0.004, "change"), cell_text(1234.5, "ppl")) == (
        "12.3%",
        "0.0%",
        "0.00",
        "1234",
    )
    # LAP's changes on a real model (4,336,251.9 %) in a cell: two digits and the power of ten
    assert (cell_text(4336251.9), cell_text(-12345.0), cell_text(9999.94), cell_text(2.5e5, "ppl")) == (
        "4.3e6%",
        "-1.2e4%",
        "9999.9%",
        "2.5e5",
    )
    shown = np.array([[float(t.rstrip("%")) for t in row] for row in trace.text])
    np.testing.assert_allclose(shown, matrix.to_numpy(), atol=0.05 + 1e-9)
    assert shown.diagonal().min() > np.where(np.eye(3, dtype=bool), -np.inf, shown).max()  # the diagonal built in
    # its own colour range: the largest |change| (the diagonal's ~49%), symmetric
    top = np.abs(matrix.to_numpy()).max()
    assert (trace.zmin, trace.zmax) == pytest.approx((-np.log10(1 + top), np.log10(1 + top)))
    change = result.figure("change").data[0]
    assert [list(r) for r in change.text] == [
        [cell_text(v, "change") for v in row] for row in result.change.drop(index=NONE).to_numpy()
    ]
    # The comparison figure carries the same numbers, on one colour axis.
    random = fake_perturbation("random", 1)
    both = compare_figure({"lape": result, "random": random})
    assert [list(r) for r in both.data[0].text] == [list(r) for r in trace.text]
    assert both.data[0].coloraxis == both.data[1].coloraxis == "coloraxis"
    values = [np.asarray(m.value("relative").drop(index=NONE)) * 100 for m in (result, random)]
    for t, v in zip(both.data, values):
        np.testing.assert_allclose(np.asarray(t.z), np.sign(v) * np.log10(1 + np.abs(v)))
    assert both.layout.coloraxis.cmax == pytest.approx(np.log10(1 + max(np.abs(v).max() for v in values)))
    bar = both.layout.coloraxis.colorbar
    assert bar.ticktext[list(bar.tickvals).index(pytest.approx(np.log10(11)))] == "+10%"
    assert bar.ticktext[list(bar.tickvals).index(0)] == "0%"


def test_a_run_s_perturbation_heatmaps_share_one_colour_range():
    run = fake_run()
    run["perturb"]["random"] = fake_perturbation("random", 1, hurt=(0.05, 0.05))  # no diagonal: ~5% everywhere
    figs = figures_of(run)
    low, high = colour_range(list(run["perturb"].values()))
    expected = pytest.approx((float(signed_log(low)), float(signed_log(high))))
    for m in run["perturb"]:
        assert (figs[f"fig2_perturb_{m}"].data[0].zmin, figs[f"fig2_perturb_{m}"].data[0].zmax) == expected, m
    axis = figs["fig3_perturb_methods"].layout.coloraxis
    assert (axis.cmin, axis.cmax) == expected
    # random's own matrix (changes of ~5%) would span its own, narrower range on its own
    alone = run["perturb"]["random"].figure().data[0]
    assert alone.zmax < figs["fig2_perturb_random"].data[0].zmax


def test_titles_name_the_model_briefly():
    assert model_label("/home/u/site-packages/lapelens/data/model") == "embedded"
    assert model_label("/root/.cache/lapelens/models/smollm2-135m") == "smollm2-135m (Q4_1)"
    assert model_label("/root/.cache/lapelens/models/gemma-3-270m") == "gemma-3-270m (Q4_K_M)"
    assert model_label("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    for name, fig in figures_of(fake_run()).items():
        title = fig.layout.title.text
        assert title.endswith(" — embedded") and title.count(" — ") == 2 and "/" not in title, (name, title)
