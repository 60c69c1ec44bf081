"""Check the published figures of one or more folders by reading the plotly JSON of every HTML figure.

    python scripts/check_figures.py figures/embedded figures/smollm2-135m figures/gemma-3-270m

A folder fails (exit 1, one line per problem) when

- **shared range**: its perturbation heatmaps (``fig2_perturb_*``, ``fig3_perturb_methods``) do not
  all have one colour range (a heatmap's ``zmin``/``zmax``, or its colour axis' ``cmin``/``cmax``);
- **model**: a title does not name the folder's model (``model`` of its ``config.json``, or of its
  parent's for a run's ``figures/``: the name, or the last part of a path, "embedded" for the shipped
  model; a folder without one is checked against ``--model``);
- **hidden**: a trace is drawn only in the legend (``visible`` is ``"legendonly"`` or false);
- **flattened**: a curve or bar series lies flat against its axis. On a linear axis, a trace is
  flattened when its nonzero magnitudes span more than ``SPAN`` x (max |v| / min |v|) and more
  than ``SHARE`` of its points fit in a band ``BAND`` of the axis' extent tall (the extent: the
  axis' ``range`` if set, else the lowest to the highest value of all traces on it, error bars
  included), and the trace's own spread is ``SPAN`` times that band or more: it varies over orders of
  magnitude, yet most of it reads as one value. A trace whose points all stay close together (a control at
  zero) is flat, not flattened;
- **table 5**: ``steer_prompted`` is not drawn as heatmaps (at least three, no bars);
- **rate**: ``fig4_sweep`` marks no selection rate (a vertical line).

A folder without any HTML figure fails too. The checks read only the files; they need neither
lapelens nor a browser.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
from pathlib import Path

import numpy as np

SPAN, SHARE, BAND = 100.0, 0.8, 0.02
PERTURBATION = ("fig2_perturb_", "fig3_perturb_methods")


def figure_json(html: str) -> dict:
    """``{"data": [...], "layout": {...}}`` of the first ``Plotly.newPlot`` call of a page."""
    start = html.index("Plotly.newPlot(")
    decoder = json.JSONDecoder()
    pos = html.index(",", start) + 1  # after the div id
    while html[pos].isspace():
        pos += 1
    data, end = decoder.raw_decode(html, pos)
    pos = html.index(",", end) + 1
    while html[pos].isspace():
        pos += 1
    layout, _ = decoder.raw_decode(html, pos)
    return {"data": data, "layout": layout}


def values(v) -> np.ndarray:
    """A trace's array as float numbers: plain lists, or plotly's packed ``{"dtype", "bdata"}``."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.astype(np.float64).ravel()
    if v is None:
        return np.array([])
    out = []
    for x in np.asarray(v, dtype=object).ravel():
        try:
            out.append(float(x))
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.array(out, dtype=np.float64)


def title(layout: dict) -> str:
    t = layout.get("title")
    return (t.get("text") or "") if isinstance(t, dict) else (t or "")


def colour_range(fig: dict) -> list[tuple[float, float] | None]:
    """The colour range of every heatmap of a figure (None where it is left to the data)."""
    out = []
    for trace in fig["data"]:
        if trace.get("type") != "heatmap":
            continue
        axis = fig["layout"].get(trace["coloraxis"], {}) if trace.get("coloraxis") else trace
        low, high = axis.get("cmin", axis.get("zmin")), axis.get("cmax", axis.get("zmax"))
        out.append(None if low is None or high is None else (float(low), float(high)))
    return out


def _axis_key(ref: str | None, letter: str) -> str:
    """``"x2"`` -> ``"xaxis2"``; the default axis -> ``"xaxis"``."""
    ref = ref or letter
    return f"{letter}axis{ref[1:]}"


def _error_ends(trace: dict, v: np.ndarray, letter: str) -> np.ndarray:
    err = trace.get(f"error_{letter}") or {}
    if not err or err.get("visible") is False or err.get("type") not in (None, "data"):
        return np.array([])
    plus = values(err.get("array"))
    minus = values(err.get("arrayminus")) if not err.get("symmetric", True) or "arrayminus" in err else plus
    ends = []
    if plus.size == v.size:
        ends.append(v + plus)
    if minus.size == v.size:
        ends.append(v - minus)
    return np.concatenate(ends) if ends else np.array([])


def flattened(fig: dict) -> list[str]:
    """Names of the traces flattened against a linear axis (see the module docstring)."""
    series = []  # (axis key, trace name, values, values with error-bar ends)
    for k, trace in enumerate(fig["data"]):
        if trace.get("type", "scatter") not in ("scatter", "bar", "scattergl"):
            continue
        letter = "x" if trace.get("type") == "bar" and trace.get("orientation") == "h" else "y"
        v = values(trace.get(letter))
        if not v.size:
            continue
        key = _axis_key(trace.get(f"{letter}axis"), letter)
        series.append((key, trace.get("name") or f"trace {k}", v, np.concatenate([v, _error_ends(trace, v, letter)])))
    out = []
    for key, name, v, _ in series:
        axis = fig["layout"].get(key, {})
        if axis.get("type") in ("log", "category", "date"):
            continue
        if axis.get("range") and all(r is not None for r in axis["range"]):
            low, high = (float(r) for r in axis["range"])
        else:
            allv = np.concatenate([w for k2, _, _, w in series if k2 == key])
            allv = allv[np.isfinite(allv)]
            low, high = float(allv.min()), float(allv.max())
        extent = abs(high - low)
        finite = np.sort(v[np.isfinite(v)])
        nonzero = np.abs(finite[finite != 0])
        if finite.size < 3 or extent == 0 or nonzero.size < 2 or nonzero.max() <= SPAN * nonzero.min():
            continue
        need = min(finite.size, math.floor(SHARE * finite.size) + 1)  # more than SHARE of the points
        narrowest = min(finite[i + need - 1] - finite[i] for i in range(finite.size - need + 1))
        if narrowest <= BAND * extent and finite[-1] - finite[0] >= SPAN * max(narrowest, np.finfo(float).tiny):
            out.append(
                f"{name} ({key}: {need} of {finite.size} points within {narrowest:.3g} of an extent of {extent:.3g})"
            )
    return out


def model_name(folder: Path, given: str | None) -> str | None:
    """The model the titles must name: from the folder's ``config.json`` (a published folder), or
    its parent's (the ``figures/`` of a run folder), else ``given``."""
    config = next((c for c in (folder / "config.json", folder.parent / "config.json") if c.is_file()), None)
    if config is not None:
        model = json.loads(config.read_text(encoding="utf-8")).get("model")
        if model:
            text = str(model)
            if not (text.startswith("/") or text.startswith(".")):
                return text
            path = Path(text)  # a local folder: titles name it by its last part, the shipped model "embedded"
            return "embedded" if path.parts[-3:] == ("lapelens", "data", "model") else path.name
    return given


def check_folder(folder: Path, model: str | None = None) -> list[str]:
    """Every problem of the folder's figures, one line each (empty: the folder passes)."""
    pages = sorted(folder.glob("*.html"))
    figures = {}
    problems = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if "Plotly.newPlot(" in text:
            figures[page.stem] = figure_json(text)
    if not figures:
        return [f"{folder}: no plotly figure (*.html) to check"]
    name = model_name(folder, model)
    ranges = {}
    for stem, fig in figures.items():
        where = f"{folder / stem}.html"
        if name is None:
            problems.append(f"{where}: model: the folder has no config.json naming its model (give --model)")
        elif name not in title(fig["layout"]):
            problems.append(f"{where}: model: the title {title(fig['layout'])!r} does not name {name!r}")
        hidden = [t.get("name") or t.get("type") for t in fig["data"] if t.get("visible") in ("legendonly", False)]
        if hidden:
            problems.append(f"{where}: hidden: traces only in the legend: {', '.join(map(str, hidden))}")
        for trace in flattened(fig):
            problems.append(f"{where}: flattened: {trace}")
        if stem.startswith(PERTURBATION):
            ranges[stem] = colour_range(fig)
    found = {r for rs in ranges.values() for r in rs}
    if ranges and (len(found) != 1 or None in found):
        detail = "; ".join(
            f"{s}: {', '.join('auto' if r is None else f'[{r[0]:.4g}, {r[1]:.4g}]' for r in rs)}"
            for s, rs in ranges.items()
        )
        problems.append(f"{folder}: shared range: the perturbation heatmaps do not share one colour range ({detail})")
    if "steer_prompted" in figures:
        kinds = [t.get("type", "scatter") for t in figures["steer_prompted"]["data"]]
        if kinds.count("heatmap") < 3 or "bar" in kinds:
            problems.append(
                f"{folder / 'steer_prompted'}.html: table 5: drawn as {', '.join(sorted(set(kinds)))}, "
                "not as three source x target heatmaps"
            )
    if "fig4_sweep" in figures:
        shapes = figures["fig4_sweep"]["layout"].get("shapes") or []
        if not any(s.get("type") == "line" and s.get("x0") == s.get("x1") for s in shapes):
            problems.append(f"{folder / 'fig4_sweep'}.html: rate: no vertical line marks the selected rate")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--model", help="the model the titles must name, for a folder without config.json")
    args = p.parse_args(argv)
    failed = 0
    for folder in args.folders:
        problems = check_folder(folder, args.model)
        for line in problems:
            print(line)
        n = len(list(folder.glob("*.html")))
        print(
            f"{folder}: {n} figures, " + (f"{len(problems)} problem(s)" if problems else "ok"),
            file=sys.stderr if problems else sys.stdout,
        )
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
