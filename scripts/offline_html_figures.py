"""Re-export plotly HTML figures that load plotly.js from a CDN as offline HTML + PNG + SVG.

For figure folders whose run folder is gone (``figures/embedded/`` came from a run on another
machine): the figure's data and layout are read back from the ``Plotly.newPlot(id, data, layout)``
call in each HTML file, unchanged, and written again through :func:`lapelens.figures.write_figures`
(one local ``plotly.min.js`` per folder, PNG and SVG through kaleido). When the run folder exists,
use ``lapelens figures RUN_DIR`` instead.

    python scripts/offline_html_figures.py figures/embedded
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def figure_from_html(path: Path):
    import plotly.graph_objects as go

    text = path.read_text()
    start = text.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    decoder = json.JSONDecoder()
    pos = text.index(",", start) + 1  # skip the div id
    values = []
    for _ in range(2):  # data, layout
        while text[pos] in " \n\t\r,":
            pos += 1
        value, pos = decoder.raw_decode(text, pos)
        values.append(value)
    return go.Figure(data=values[0], layout=values[1])


def main() -> None:
    from lapelens.figures import write_figures

    folder = Path(sys.argv[1])
    figs = {
        p.stem: figure_from_html(p) for p in sorted(folder.glob("*.html")) if "cdn.plot.ly" in p.read_text()[:20000]
    }
    write_figures(figs, folder)
    print(f"{len(figs)} figures re-exported offline in {folder}: {', '.join(figs)}")


if __name__ == "__main__":
    main()
