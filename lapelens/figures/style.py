"""Small shared pieces of the figures' look: how a model is named in a title, and sizes."""

from __future__ import annotations

from pathlib import Path

#: Pixels per heatmap cell: wide enough for "-12.3%" at the cell font size.
CELL_WIDTH, CELL_HEIGHT = 72, 46


def model_label(name: object) -> str:
    """A model's name for a title: a hub name as it is, a local folder by its last part, the
    shipped model as "embedded" (its folder is ``.../lapelens/data/model`` on each machine)."""
    if not name:
        return "?"
    text = str(name)
    path = Path(text)
    if not (path.is_absolute() or text.startswith(".")):
        return text
    return "embedded" if path.parts[-3:] == ("lapelens", "data", "model") else path.name
