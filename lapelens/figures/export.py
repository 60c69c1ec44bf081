"""Write a figure as HTML that works offline, plus PNG and SVG rendered by plotly's own exporter.

HTML: ``include_plotlyjs="directory"``, so every page loads one ``plotly.min.js`` beside it by a
relative path (4.8 MB once per folder instead of once per figure) and nothing from the network.

PNG and SVG: kaleido 1.x, which drives a Chromium-based browser. It is found the way kaleido's
own ``choreographer`` finds one: ``BROWSER_PATH`` if set (kaleido's variable, read by kaleido, not
by lapelens), else ``chromium``/``chrome`` on ``PATH``, else the usual install paths (Debian's
``/usr/bin/chromium`` among them). lapelens never downloads a browser. MathJax is switched off in
kaleido's page: by default kaleido loads it from a CDN, which is a network request for nothing (no
figure here uses LaTeX) and a stall where the network is blocked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lapelens.errors import LapelensError

#: Formats written for every figure; the HTML comes first and never needs a browser.
FORMATS = ("html", "png", "svg")
IMAGE_FORMATS = ("png", "svg")
#: Image size when a figure's layout sets none (plotly's own defaults).
DEFAULT_WIDTH, DEFAULT_HEIGHT = 700, 500
#: PNG pixels per layout pixel: 2 keeps text sharp when a README scales the image down.
PNG_SCALE = 2
PLOTLY_JS = "plotly.min.js"
#: Seconds kaleido waits for one image (its default, 90, fails on a machine busy with model runs:
#: one figure took 138 s for PNG+SVG at nice 19 beside two reproduce runs).
RENDER_TIMEOUT = 600
NO_BROWSER = (
    "PNG/SVG export needs a Chromium browser and none was found (the HTML was written): install "
    "Debian's chromium (apt-get install chromium), or set BROWSER_PATH to a Chrome/Chromium binary."
)


def find_browser() -> str | None:
    """The Chromium-based browser kaleido would use, or None; never downloads one."""
    import os

    from choreographer.browsers.chromium import Chromium

    path = Chromium.find_browser(skip_local=False)
    # choreographer returns BROWSER_PATH unchecked; a wrong one is as good as none.
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def image_size(fig: Any) -> tuple[int, int]:
    """(width, height) in layout pixels: the figure's own, else plotly's defaults."""
    layout = fig.layout
    return int(layout.width or DEFAULT_WIDTH), int(layout.height or DEFAULT_HEIGHT)


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in {f".{f}" for f in FORMATS} else path


def _ensure_plotly_js(folder: Path) -> None:
    """One plotly.min.js per folder, the copy of the installed plotly (a stale one from another
    plotly version would not draw this version's figure JSON)."""
    from plotly.offline import get_plotlyjs

    source = get_plotlyjs().encode("utf-8")
    target = folder / PLOTLY_JS
    if not target.is_file() or target.stat().st_size != len(source) or target.read_bytes() != source:
        target.write_bytes(source)


def write_html(fig: Any, path: str | Path) -> Path:
    """``path`` (suffix optional) as ``.html`` loading ``plotly.min.js`` from its own folder."""
    html = _stem(path).with_suffix(".html")
    html.parent.mkdir(parents=True, exist_ok=True)
    _ensure_plotly_js(html.parent)
    # A fixed div id (the file's name) keeps a regenerated file byte-identical when the figure is.
    fig.write_html(
        str(html), include_plotlyjs="directory", full_html=True, div_id=html.stem, config={"displaylogo": False}
    )
    return html


def write_images(figures: Iterable[tuple[Any, str | Path]], formats: Sequence[str] = IMAGE_FORMATS) -> list[Path]:
    """Render every (figure, path) to each image format in one browser session; returns the files."""
    import kaleido

    specs, paths = [], []
    for fig, path in figures:
        width, height = image_size(fig)
        for fmt in formats:
            if fmt not in IMAGE_FORMATS:
                raise LapelensError(f"Image format {fmt!r} is not one of {list(IMAGE_FORMATS)}.")
            target = _stem(path).with_suffix(f".{fmt}")
            target.parent.mkdir(parents=True, exist_ok=True)
            specs.append(
                {
                    "fig": _fixed_trace_uids(fig.to_dict()),
                    "path": target,
                    "opts": {
                        "format": fmt,
                        "width": width,
                        "height": height,
                        "scale": PNG_SCALE if fmt == "png" else 1,
                    },
                }
            )
            paths.append(target)
    if not specs:
        return []
    browser = find_browser()
    if browser is None:
        raise LapelensError(NO_BROWSER)
    from kaleido.errors import ChromeNotFoundError

    try:
        kaleido.write_fig_from_object_sync(
            specs, kopts={"path": browser, "mathjax": False, "timeout": RENDER_TIMEOUT}, cancel_on_error=True
        )
    except ChromeNotFoundError:
        raise LapelensError(NO_BROWSER) from None
    for target in paths:
        if target.suffix == ".svg":
            target.write_text(stable_svg_ids(target.read_text(encoding="utf-8"), target.stem), encoding="utf-8")
    return paths


def _fixed_trace_uids(fig: dict) -> dict:
    """Plotly names a trace's SVG classes and gradients by its ``uid``, random unless set: set it to
    the trace's place, so that the same figure renders to the same SVG."""
    for k, trace in enumerate(fig.get("data", [])):
        trace.setdefault("uid", f"trace{k}")
    return fig


def stable_svg_ids(svg: str, prefix: str) -> str:
    """``svg`` with plotly's random element ids (``defs-3f9a1c``, ``clip3f9a1cxyplot``, gradient ids
    with a trace uid ...) renamed ``PREFIX-0``, ``PREFIX-1`` ... in order of appearance, and every
    ``#id`` reference to them (``url(#...)``, ``href``) with them: the same figure gives the same
    bytes, and the file's name in the ids keeps them apart when several SVGs share one page."""
    import re

    ids = list(dict.fromkeys(re.findall(r'\bid="([^"]+)"', svg)))
    if not ids:
        return svg
    new = {old: f"{prefix}-{k}" for k, old in enumerate(ids)}
    known = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    svg = re.sub(rf'\bid="({known})"', lambda m: f'id="{new[m.group(1)]}"', svg)
    return re.sub(rf"#({known})(?=[\"')&])", lambda m: f"#{new[m.group(1)]}", svg)


def write_figure(fig: Any, path: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``path.html``, ``path.png`` and ``path.svg`` (``path`` with or without a
    suffix). The HTML is written first, so it exists even when the images fail for want of a browser."""
    return write_figures({_stem(path).name: fig}, _stem(path).parent, formats)


def write_figures(figures: Mapping[str, Any], folder: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write every ``{name: figure}`` into ``folder`` as ``name.html/.png/.svg``; the images of all
    figures come from one browser start (a few seconds) rather than one per figure."""
    folder = Path(folder)
    written = [write_html(fig, folder / name) for name, fig in figures.items()] if "html" in formats else []
    images = [f for f in formats if f != "html"]
    if images:
        written += write_images([(fig, folder / name) for name, fig in figures.items()], images)
    return written
