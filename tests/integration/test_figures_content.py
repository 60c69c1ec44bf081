"""What the figures state: collapse cells, Fig. 4's signed-log axis and rate, Table 5 as heatmaps,
Wilson intervals on every share (against scipy), the two panels of generation under deactivation,
captions with their sizes, and no trace drawn only in the legend."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from lapelens.evaluate import figures_of
from lapelens.figures.perturbation import COLLAPSE, colour_range, heatmap
from lapelens.figures.style import signed_log, signed_log_ticks, wilson
from tiny import RUN_LANGS as LANGS
from tiny import fake_perturbation, fake_run


@pytest.fixture(scope="module")
def run():
    return fake_run()


@pytest.fixture(scope="module")
def figs(run):
    return figures_of(run)


def caption(fig) -> str:
    return next(a.text for a in fig.layout.annotations if a.name == "caption")


def scipy_wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def test_wilson_intervals_equal_scipy_s_and_the_textbook_numbers():
    low, high = wilson(np.array([0.5, 0.0, 1.0, 7 / 12]), np.array([10.0, 10, 50, 12]))
    assert (low[0], high[0]) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # 5 of 10: the textbook example
    assert (low[1], high[1]) == pytest.approx((0.0, 0.2775), abs=1e-4)
    for (k, n), lo, hi in zip([(5, 10), (0, 10), (50, 50), (7, 12)], low, high):
        assert (lo, hi) == pytest.approx(scipy_wilson(k, n), abs=1e-12)
    nan_low, nan_high = wilson(0.5, np.nan)  # n not recorded: no interval, not a made-up one
    assert np.isnan(nan_low) and np.isnan(nan_high)


def test_signed_log_and_its_ticks():
    np.testing.assert_allclose(signed_log(np.array([-99.0, 0.0, 9.0, 999.0])), [-2.0, 0.0, 1.0, 3.0])
    vals, text = signed_log_ticks(1000.0, "%")
    assert text[0] == "−1,000%" and text[-1] == "+1,000%" and "0%" in text and "+10%" in text
    np.testing.assert_allclose(
        vals, signed_log(np.array([float(t.replace("−", "-").rstrip("%").replace(",", "")) for t in text]))
    )


def test_collapse_cells_are_labelled_and_do_not_stretch_the_shared_range():
    lape = fake_perturbation("lape", 0)
    lap = fake_perturbation("lap", 1, hurt=(3.0, 0.05))  # e^3 = x20 on the diagonal: a collapse
    assert COLLAPSE == 10.0
    fig = heatmap(lap, scale=colour_range([lape, lap]))
    text = np.array(fig.data[0].text)
    assert (np.diag(text) == "collapse").all() and not (text[~np.eye(3, dtype=bool)] == "collapse").any()
    assert "the model breaks (lap: 3 of 9 cells)" in caption(fig)
    # the range ends at the largest change short of a collapse: LAPE's diagonal, not LAP's x20
    top = max(
        np.abs(r.value("relative").drop(index="none").to_numpy() * 100)[~np.eye(3, dtype=bool) | (r is lape)].max()
        for r in (lape, lap)
    )
    assert colour_range([lape, lap]) == pytest.approx((-top, top))
    assert fig.data[0].zmax == pytest.approx(np.log10(1 + top)) and top < 100
    # a matrix of +-0.01% stays pale: its own range is at least +-10%
    flat = fake_perturbation("pv", 2, hurt=(0.0, 0.0))
    assert colour_range(flat) == (-10.0, 10.0)


def test_fig4_has_a_signed_log_axis_labelled_in_values_and_the_run_s_rate_marked(run, figs):
    fig, sweep = figs["fig4_sweep"], run["sweep"]
    frame = sweep.value("relative") * 100
    for trace in fig.data:
        lang = trace.name.split(" ")[0]
        np.testing.assert_allclose(np.asarray(trace.y), signed_log(frame[lang].to_numpy()))
    assert [t.line.width for t in fig.data if t.name == "fr (target)"] == [4]
    assert fig.layout.yaxis.title.text == "PPL change (%), signed log"
    vals, labels = list(fig.layout.yaxis.tickvals), list(fig.layout.yaxis.ticktext)
    assert labels[vals.index(0.0)] == "0%" and labels[vals.index(pytest.approx(np.log10(11)))] == "+10%"
    (line,) = fig.layout.shapes
    assert line.type == "line" and line.x0 == line.x1 == 1.0  # selected_rate 0.01 of the sweep's record
    assert "this run's top_rate: 1%" in [a.text for a in fig.layout.annotations]


def test_table5_is_three_source_by_target_heatmaps_with_the_shares_in_the_cells(run, figs):
    fig, result = figs["steer_prompted"], run["steer_prompted"]
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1
    for trace, column in zip(fig.data, ["before", "steered", "deactivated_and_steered"]):
        assert list(trace.x) == list(trace.y) == list(LANGS)
        z = np.asarray(trace.z, dtype=float)
        assert np.isnan(np.diag(z)).all()
        for (src, tgt), share in result.summary[column].items():
            i, j = LANGS.index(src), LANGS.index(tgt)
            assert z[i, j] == pytest.approx(share) and trace.text[i][j] == f"{share:.2f}"
            low, high = scipy_wilson(round(share * 4), 4)
            assert f"{share:.2f} [{low:.2f}, {high:.2f}], n = 4" in trace.hovertext[i][j]
    assert "n = 4 prompts per cell" in caption(fig)


def test_share_bars_carry_wilson_intervals_and_their_n(run, figs):
    for name in ("steer_unconditional", "kojima"):
        fig, summary = figs[name], run[name].summary
        bars = [t for t in fig.data if t.type == "bar"]
        assert len(bars) == 2
        for bar, column in zip(bars, ["before", "after"]):
            shares = summary[column].to_numpy()
            ends = np.array([scipy_wilson(round(s * 12), 12) for s in shares])
            np.testing.assert_allclose(bar.y, shares, atol=1e-6)
            np.testing.assert_allclose(bar.error_y.array, ends[:, 1] - shares, atol=1e-6)
            np.testing.assert_allclose(bar.error_y.arrayminus, shares - ends[:, 0], atol=1e-6)
        assert "n = 12 generations per bar" in caption(fig)
    assert [t.name for t in figs["kojima"].data if t.type == "bar"] == ["before", "pinned"]


def test_generation_under_deactivation_shows_the_prompt_s_language_and_perplexity(figs):
    fig = figs["deactivated_generation"]
    titles = [a.text for a in fig.layout.annotations if a.name != "caption"]
    assert titles == ["share of outputs in the prompt's language", "perplexity of the outputs (unperturbed model)"]
    share = [t for t in fig.data if t.type == "bar" and t.yaxis == "y"]
    ppl = [t for t in fig.data if t.type == "bar" and t.yaxis == "y2"]
    assert [list(t.y) for t in share] == [[1.0] * 3, [pytest.approx(2 / 3)] * 3]
    assert [list(t.y) for t in ppl] == [[12.5] * 3, [30.25] * 3]
    low, high = scipy_wilson(4, 4)
    np.testing.assert_allclose(share[0].error_y.arrayminus, [1 - low] * 3, atol=1e-6)
    assert (
        fig.layout.xaxis.title.text == "prompt's language"
        and fig.layout.yaxis.title.text == "share in the prompt's language"
    )
    assert "n = 4 prompts per language and condition" in caption(fig) and "lape neurons per language: 10–12" in caption(
        fig
    )


def test_every_figure_has_a_caption_with_its_sizes_and_no_trace_only_in_the_legend(figs):
    text = "3 chunks of 46 tokens, 135 predicted tokens"
    sizes = {
        "fig5_layers": "per language 14",
        "fig2_perturb_lape": text,
        "fig2_perturb_random": text,
        "fig3_perturb_methods": "lape 10–12, random 10–12",
        "fig4_sweep": "5 (1%), 10 (2%)",
        "fig6_ses": "n = 6 aligned texts",
        "fig7_dominance": "n = 6 aligned texts",
    }
    for name, fig in figs.items():
        assert all(t.visible in (None, True) for t in fig.data), name
        assert sizes.get(name, "n = ") in caption(fig), name
    for name in ("fig2_perturb_lape", "fig2_perturb_random"):
        assert "Neurons deactivated per language: 10–12." in caption(figs[name])
