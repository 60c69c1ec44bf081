"""PNG and SVG beside an explorer page: the page as a browser shows it, with one neuron open.

    python scripts/explorer_images.py figures/embedded/explorer.html [--neuron LAYER:INDEX]

Opens the page from ``file://`` in headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright) with every network request blocked (the page's folder of layer scripts loads from
``file://`` too), opens the best LAPE neuron (the first of the LAPE list) or the one given, and writes

- ``explorer.png``: a screenshot of the page from its top (at most ``MAX_HEIGHT`` pixels: the
  overview, the neuron's summary and charts, the start of its contexts);
- ``explorer.svg``: the page's own vector charts for that neuron (firing probability, mean
  activation, loss change, logit effects, activation histograms), each under its panel's heading,
  stacked into one SVG document with the page's stylesheet. The charts are the page's inline
  SVG elements as drawn, so the file is vector, not a picture of a picture.

Fails (exit code 1) if the page logs a console error or tries to reach the network.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

PANELS = ("panel-firing", "panel-mean", "panel-loss", "panel-logit-hist", "panel-hist")
WIDTH = 1280
#: The PNG stops here: the overview, the neuron's summary and charts, and the first language's contexts.
MAX_HEIGHT = 2600

#: Per panel: its heading and the outer HTML and size of every inline <svg> in it, in page order.
_COLLECT = """(ids) => ids.map((id) => {
  const el = document.getElementById(id);
  const head = el.querySelector('h2, h3');
  const svgs = [...el.querySelectorAll('svg')].map((s) => {
    const b = s.getBoundingClientRect();
    const label = s.closest('.langblock') ? s.closest('.langblock').querySelector('b') : null;
    return {html: s.outerHTML, w: b.width, h: b.height, label: label ? label.textContent : ''};
  });
  return {id, title: head ? head.textContent : id, svgs};
})"""


def _svg_document(panels: list[dict], css: str, title: str) -> str:
    """One SVG: a title, then each panel's heading and its charts (side by side, wrapping at WIDTH)."""
    parts, y = [f'<text x="10" y="24" class="doc-title">{html.escape(title)}</text>'], 44
    for panel in panels:
        if not panel["svgs"]:
            continue
        parts.append(f'<text x="10" y="{y + 16}" class="panel-title">{html.escape(panel["title"])}</text>')
        y += 26
        x, row_h = 10.0, 0.0
        for svg in panel["svgs"]:
            w, h = float(svg["w"]), float(svg["h"])
            if x > 10 and x + w > WIDTH:
                x, y, row_h = 10.0, y + row_h + 10, 0.0
            label_h = 14 if svg["label"] else 0
            if svg["label"]:
                parts.append(f'<text x="{x:.0f}" y="{y + 11}" class="chart-label">{html.escape(svg["label"])}</text>')
            # a nested <svg> keeps the chart's own coordinate system; x/y place it
            inner = svg["html"].replace("<svg", f'<svg x="{x:.0f}" y="{y + label_h:.0f}"', 1)
            parts.append(inner)
            x += w + 16
            row_h = max(row_h, h + label_h)
        y += row_h + 20
    style = (
        css + "\n.doc-title { font: bold 16px sans-serif; } .panel-title { font: bold 13px sans-serif; }"
        " .chart-label { font: bold 11px sans-serif; } text { font-family: sans-serif; }"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH + 20}" height="{y:.0f}" '
        f'viewBox="0 0 {WIDTH + 20} {y:.0f}"><style>{html.escape(style, quote=False)}</style>'
        f'<rect width="100%" height="100%" fill="white"/>{"".join(parts)}</svg>'
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path, help="explorer.html written by `lapelens explore`")
    ap.add_argument("--neuron", help="LAYER:INDEX to open (default: the first neuron of the LAPE list)")
    args = ap.parse_args(argv)
    from _offline_page import open_offline
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page, errors = open_offline(p, args.page, viewport={"width": WIDTH, "height": 900})
        if args.neuron:
            layer, index = args.neuron.split(":")
            page.select_option("#search-kind", "neuron")
            page.fill("#search-input", f"{layer}:{index}")
            page.click("#search-button")
        else:
            page.select_option("#method-select", "lape")
            row = page.locator("#neuron-list tr.neuron-row").first
            layer, index = row.get_attribute("data-layer"), row.get_attribute("data-neuron")
            row.click()
        page.wait_for_function(f"document.getElementById('panel-firing').dataset.neuron === '{layer}:{index}'")
        page.wait_for_timeout(300)
        png = args.page.with_suffix(".png")
        height = min(page.evaluate("document.documentElement.scrollHeight"), MAX_HEIGHT)
        page.screenshot(path=str(png), full_page=True, clip={"x": 0, "y": 0, "width": WIDTH, "height": height})
        panels = page.evaluate(_COLLECT, list(PANELS))
        css = page.evaluate("() => [...document.querySelectorAll('style')].map((s) => s.textContent).join('\\n')")
        title = f"{page.title()}: {page.inner_text('#neuron-title')}"
        browser.close()
    if errors:
        print("explorer_images: the page failed offline: " + "; ".join(errors), file=sys.stderr)
        return 1
    svg = args.page.with_suffix(".svg")
    svg.write_text(_svg_document(panels, css, title), encoding="utf-8")
    charts = sum(len(p["svgs"]) for p in panels)
    print(f"wrote {png} and {svg} ({charts} charts from {sum(1 for p in panels if p['svgs'])} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
