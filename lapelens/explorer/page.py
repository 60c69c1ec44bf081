"""``ExplorerData`` -> the page: one HTML file and a folder of scripts beside it.

The HTML holds what the overview, the list and the search need (a few hundred KB even for a real
model); each layer's numbers, each search shard and the texts of the tokens shown are ``<script>``
files in the folder, loaded when a neuron of that layer is opened or a token is searched. Script files (not JSON fetched)
because they load from ``file://``. The stylesheet, the scripts and the HTML skeleton are files
of this package (``static/``); nothing comes from the network.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lapelens._version import __version__
from lapelens.explorer.data import ExplorerData
from lapelens.explorer.live import LIMITS
from lapelens.explorer.panels import Vocab, rounded

#: The page's scripts, in load order (each part uses the ones before it).
SCRIPTS = ("core.js", "panels.js", "live.js", "app.js")
#: The one line that tells the page it is offline; the live server serves it with "live".
OFFLINE_MODE = '<meta name="lapelens-mode" content="offline">'
LIVE_MODE = '<meta name="lapelens-mode" content="live">'


def static_text(name: str) -> str:
    return (resources.files("lapelens.explorer") / "static" / name).read_text(encoding="utf-8")


def _script(call: str, key: int, payload: dict) -> str:
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return f"{call}({key},{blob});\n"


def _label(per_language: dict, what: str) -> str:
    values = set(per_language.values())
    if len(values) == 1:
        return f"{values.pop():,} {what} per language"
    return ", ".join(f"{l} {n:,}" for l, n in per_language.items()) + f" {what}"


def page_json(data: ExplorerData, folder: str, vocab: Vocab | None = None) -> dict:
    """What the HTML itself holds: every list and search needs, nothing per neuron beyond the listed ones."""
    sel = data.selection
    listed = sorted(
        {f for mask in sel.selections.values() for f in mask.any(dim=0).flatten().nonzero().flatten().tolist()}
    )
    p = data.firing.probability().flatten(1)  # lang flat
    entropy, rank = sel.entropy.flatten(), sel.rank.flatten()
    loss = data.loss.rows(data.d_mlp)
    st = dict(data.settings)
    st["context_tokens_label"] = _label(st["context_tokens_per_language"], "tokens") + " of train text"
    st["loss_tokens_label"] = _label(st["loss_tokens_per_language"], "predicted tokens")
    st["coverage"] = (
        f"Every neuron has its firing probabilities, mean activations, LAPE entropy and rank. Direct logit "
        f"effects: the {st['logit_neurons']:,} neurons some method selected (lapelens explore --serve "
        f"computes any neuron's). Contexts and activation histograms: the {st['detail_neurons']:,} neurons "
        f"that {', '.join(st['detail_methods'])} selected. Loss change when deactivated: {st['loss_neurons']:,} "
        f"of the {st['primary_neurons']:,} {st['primary']} neurons. Search by token: the "
        f"{st['search_tokens']:,} tokens of the page's text (train text of the contexts, held-out text of "
        f"the loss change) of the {st['vocab_size']:,} in the vocabulary, each with its strongest promoters "
        "among all neurons; the live server searches every token."
    )
    return {
        "lapelens_version": __version__,
        "model": data.model,
        "languages": list(data.languages),
        "n_layers": data.n_layers,
        "d_mlp": data.d_mlp,
        "n": data.firing.n.tolist(),
        "id_width": data.logits.id_width,
        "files": folder,
        "selection": sel.page_json(data.languages),
        "rows": {
            "index": listed,
            "rank": rank[listed].tolist(),
            "entropy": rounded(entropy[listed], 5),
            "p": rounded(p[:, listed].T, 4),
            "loss": [rounded(loss[f], 6) if f in loss else None for f in listed],
        },
        "loss": data.loss.page_json(),
        "contexts": data.contexts.page_json(vocab if vocab is not None else Vocab(data.vocab)),
        "search": {
            "shards": data.search.n_shards,
            "top": int(data.search.promoters.neurons.shape[1]),
            "width": data.search.width,
            "step": data.search.step(),
            "tokens": len(data.search.promoters.tokens),
        },
        "live_limits": dict(LIMITS),
        "settings": st,
    }


def layer_json(data: ExplorerData, layer: int, vocab: Vocab) -> dict:
    """One layer's numbers, each panel's under its name (the texts of their tokens go to ``vocab``)."""
    panels = {
        "selection": data.selection,
        "firing": data.firing,
        "mean": data.mean,
        "histogram": data.histogram,
        "contexts": data.contexts,
        "logits": data.logits,
        "loss": data.loss,
    }
    return {key: panel.layer_json(layer, vocab) for key, panel in panels.items()}


@dataclass
class Page:
    """The HTML and the scripts of its folder (``files``: name -> text; none when inlined)."""

    html: str
    folder: str
    files: dict[str, str]

    def live_html(self) -> str:
        """The same page telling its script that the lapelens server (and its API) is behind it."""
        return self.html.replace(OFFLINE_MODE, LIVE_MODE, 1)

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` and its scripts to the folder beside it (replacing an older one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = path.parent / self.folder
        for old in [*folder.glob("layer_*.js"), *folder.glob("search_*.js")]:  # a page of another model's size
            old.unlink()
        if self.files:
            folder.mkdir(exist_ok=True)
            for name, text in self.files.items():
                (folder / name).write_text(text, encoding="utf-8")
        elif folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        path.write_text(self.html, encoding="utf-8")
        return path

    def sizes(self) -> tuple[int, int]:
        """Bytes of the HTML and of all the folder's scripts together."""
        return len(self.html.encode()), sum(len(t.encode()) for t in self.files.values())


def folder_for(page_file: str | Path) -> str:
    """``explorer.html`` -> ``explorer_files`` (as browsers name a saved page's folder)."""
    return Path(page_file).stem + "_files"


def render(data: ExplorerData, folder: str = "explorer_files", inline: bool = False) -> Page:
    """The page of ``data``; ``inline`` puts every script into the HTML (one file, e.g. for a notebook's iframe)."""
    vocab = Vocab(data.vocab)  # every token text any layer or context shows, written once
    files = {f"layer_{i:03d}.js": _script("lapelensLayer", i, layer_json(data, i, vocab)) for i in range(data.n_layers)}
    files.update(
        {f"search_{s:03d}.js": _script("lapelensSearch", s, shard) for s, shard in enumerate(data.search.shards())}
    )
    blob = json.dumps(page_json(data, folder, vocab), ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    files["vocab.js"] = _script("lapelensVocab", 0, vocab.json())
    st = data.settings
    title = f"lapelens neuron explorer: {data.model}"
    meta = (
        f"{data.n_layers} layers x {data.d_mlp} neurons, languages {', '.join(data.languages)}; from {st.get('source', '?')}; "
        f"lapelens {__version__}"
    )
    values = {
        "title": html.escape(title),
        "meta": html.escape(meta),
        "css": static_text("explorer.css"),
        "data": blob,
        "js": "\n".join(static_text(name) for name in SCRIPTS).replace("</script", "<\\/script"),
        "inline": "".join(f"<script>{text}</script>" for text in files.values()) if inline else "",
    }
    page = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], static_text("page.html"))
    return Page(page, folder, {} if inline else files)
