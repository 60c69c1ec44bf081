"""The live explorer: the page and a small JSON API on 127.0.0.1, with the model behind them.

The server is the standard library's ``http.server.ThreadingHTTPServer``: a maintained part of
Python that does the HTTP parsing and adds no dependency, which is all a tool listening on the
loopback interface for one researcher needs (an ASGI stack would add two packages for no gain
here). Requests run in threads, so page files load while the model works, but every model call
holds one lock: torch modules with hooks are not thread-safe, and hooks of one request must never
see another's forward. The API (documented in ``docs/explorer.md``):

- ``GET /api/activations?layer=L&neuron=J&text=T``
- ``GET /api/steer?prompt=T&max_new_tokens=K`` with ``layer=L&neuron=J&value=V``, or
  ``language=xx&scale=s``, or neither (the unsteered continuation)
- ``GET /api/search?token=W[&top=N]``
- ``GET /api/logits?layer=L&neuron=J[&top=N]``
- ``GET /api/info``

A bad request gets a 400 and ``{"error": "..."}``; the server keeps serving. Requests whose Host
is not 127.0.0.1 or localhost (at this port) get a 403, which keeps out pages that reach the port
through a DNS name of their own.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import torch

from lapelens.errors import LapelensError
from lapelens.explorer.effects import neuron_logits, token_promoters, unembedding
from lapelens.explorer.live import LIMITS, check_neuron, continuation, neuron_setting, number, token_activations
from lapelens.explorer.page import Page
from lapelens.explorer.search import text_index, token_ids
from lapelens.explorer.text import shown_token
from lapelens.models import neuron_spec
from lapelens.neurons import LanguageNeurons
from lapelens.stats import ActivationStats
from lapelens.types import HookedModel

HOST = "127.0.0.1"


class LiveExplorer:
    """The model, its statistics and neuron set, and the page: everything a request may need."""

    def __init__(self, model: HookedModel, page: Page, stats: ActivationStats, neurons: LanguageNeurons):
        spec = neuron_spec(model)
        spec.check_fits(stats.n_layers, stats.d_mlp, "statistics")
        spec.check_fits(neurons.n_layers, neurons.d_mlp, f"{neurons.method} neuron set")
        self.model, self.page, self.stats, self.neurons = model, page, stats, neurons
        self.bound = neurons.on(model)
        n_vocab = unembedding(model)[1].shape[1]
        tok = model.tokenizer
        n = min(n_vocab, len(tok))
        self.decoded = tok.batch_decode([[i] for i in range(n)])
        self.texts = text_index(self.decoded)
        self.lock = threading.Lock()

    # ---- the API -------------------------------------------------------------------------------
    def activations(self, q: dict[str, str]) -> dict:
        layer, neuron = check_neuron(self.model, need(q, "layer"), need(q, "neuron"))
        text = need(q, "text", allow_empty=True)
        with self.lock:
            return token_activations(self.model, layer, neuron, text).json()

    def steer(self, q: dict[str, str]) -> dict:
        prompt = q.get("prompt", "")
        k = q.get("max_new_tokens", "24")
        if not k.strip().isdigit():
            raise LapelensError(f"max_new_tokens must be a whole number, got {k!r}.")
        by_neuron, by_language = any(x in q for x in ("layer", "neuron", "value")), "language" in q
        if by_neuron and by_language:
            raise LapelensError("Steer one neuron (layer, neuron, value) or one language (language, scale), not both.")
        with self.lock:
            if by_neuron:
                layer, neuron = check_neuron(self.model, need(q, "layer"), need(q, "neuron"))
                value = number(need(q, "value"), "value")
                ids, text = continuation(self.model, prompt, int(k), neuron_setting(self.model, layer, neuron, value))
                what = {"layer": layer, "neuron": neuron, "value": value}
            elif by_language:
                lang = need(q, "language")
                self.neurons.lang_index(lang)
                scale = number(q.get("scale", "1"), "scale")
                ids, text = continuation(self.model, prompt, int(k), self.bound.steer(lang, self.stats, scale))
                what = {
                    "language": lang,
                    "scale": scale,
                    "method": self.neurons.method,
                    "neurons": self.neurons.count(lang),
                }
            else:
                ids, text = continuation(self.model, prompt, int(k))
                what = None
        return {"text": text, "ids": ids, "intervention": what}

    def search(self, q: dict[str, str]) -> dict:
        token = need(q, "token", allow_empty=False, strip=False)
        top = _top(q, "20")
        try:
            ids = token_ids(self.model.tokenizer, self.texts, token)
        except LapelensError as exc:  # nothing found is an answer, not a bad request
            return {"token": token, "token_id": None, "token_ids": [], "neurons": [], "note": str(exc)}
        with self.lock:
            flat, values = token_promoters(self.model, ids[0], top)
        d = neuron_spec(self.model).d_mlp
        return {
            "token": token,
            "token_id": ids[0],
            "token_ids": ids,
            "neurons": [
                {"layer": f // d, "neuron": f % d, "effect": v} for f, v in zip(flat.tolist(), values.tolist())
            ],
        }

    def logits(self, q: dict[str, str]) -> dict:
        layer, neuron = check_neuron(self.model, need(q, "layer"), need(q, "neuron"))
        top = _top(q, "10")
        with self.lock:
            e = neuron_logits(self.model, torch.tensor([[layer, neuron]]), top)
        return {
            "layer": layer,
            "neuron": neuron,
            "promoted": self._tokens(e.promoted[0], e.promoted_value[0]),
            "suppressed": self._tokens(e.suppressed[0], e.suppressed_value[0]),
            "histogram": {"range": e.hist_range[0].tolist(), "counts": e.hist[0].tolist()},
        }

    def _tokens(self, ids: torch.Tensor, values: torch.Tensor) -> list[dict]:
        """Token ids with their effects and the text the page shows (a byte piece as its raw bytes)."""
        tok, n = self.model.tokenizer, len(self.decoded)
        return [
            {"id": i, "text": shown_token(tok, i, self.decoded[i] if i < n else None), "effect": v}
            for i, v in zip(ids.tolist(), values.tolist())
        ]

    def info(self, q: dict[str, str]) -> dict:
        spec = neuron_spec(self.model)
        return {
            "model": self.model.cfg.model_name,
            "n_layers": spec.n_layers,
            "d_mlp": spec.d_mlp,
            "languages": list(self.stats.languages),
            "method": self.neurons.method,
            "limits": LIMITS,
        }

    def routes(self) -> dict[str, Callable[[dict[str, str]], dict]]:
        return {
            "/api/activations": self.activations,
            "/api/steer": self.steer,
            "/api/search": self.search,
            "/api/logits": self.logits,
            "/api/info": self.info,
        }

    def file(self, path: str) -> tuple[bytes, str] | None:
        """The page (live) or one of its scripts, by URL path; None if there is no such file."""
        if path in ("/", "/index.html", "/explorer.html"):
            return self.page.live_html().encode(), "text/html; charset=utf-8"
        folder, _, name = path.lstrip("/").partition("/")
        if folder == self.page.folder and name in self.page.files:
            return self.page.files[name].encode(), "text/javascript; charset=utf-8"
        return None


def _top(q: dict[str, str], default: str) -> int:
    """The ``top`` parameter: a whole number 1-1000."""
    top = q.get("top", default)
    if not top.isdigit() or not 1 <= int(top) <= 1000:
        raise LapelensError(f"top must be a whole number 1-1000, got {top!r}.")
    return int(top)


def need(q: dict[str, str], key: str, allow_empty: bool = False, strip: bool = True) -> str:
    """A required request parameter."""
    if key not in q:
        raise LapelensError(f"Missing parameter {key!r}.")
    value = q[key]
    if not allow_empty and not (value.strip() if strip else value):
        raise LapelensError(f"Parameter {key!r} is empty.")
    return value


def _handler(explorer: LiveExplorer, log: Callable[[str], None] | None) -> type[BaseHTTPRequestHandler]:
    routes = explorer.routes()

    class Handler(BaseHTTPRequestHandler):
        server_version = "lapelens-explorer"

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload, ensure_ascii=False).encode(), "application/json; charset=utf-8")

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            port = self.server.server_address[1]
            if self.headers.get("Host") not in (f"{HOST}:{port}", f"localhost:{port}"):
                # another name for this address is a page elsewhere reaching in (DNS rebinding)
                self._json(
                    403,
                    {
                        "error": f"Open the explorer as http://{HOST}:{port}/ (Host {self.headers.get('Host')!r} refused)."
                    },
                )
                return
            url = urlparse(self.path)
            path = unquote(url.path)
            if path in routes:
                params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                try:
                    self._json(200, routes[path](params))
                except LapelensError as exc:
                    self._json(400, {"error": str(exc)})
                except Exception as exc:  # a bug must not stop the server; say what it was
                    self._json(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            found = explorer.file(path)
            if found is None:
                self._json(
                    404,
                    {
                        "error": f"No such page or API: {path} (the API is /api/activations, /api/steer, "
                        "/api/search, /api/logits, /api/info)."
                    },
                )
                return
            self._send(200, *found)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            if log is not None:
                log(f"{self.address_string()} {format % args}")

    return Handler


def make_server(explorer: LiveExplorer, port: int = 0, log: Callable[[str], None] | None = None) -> ThreadingHTTPServer:
    """A server bound to 127.0.0.1 only (``port=0``: any free port; ``server.server_address[1]`` says which)."""
    try:
        server = ThreadingHTTPServer((HOST, port), _handler(explorer, log))
    except OSError as exc:
        raise LapelensError(
            f"Cannot listen on {HOST}:{port} ({exc.strerror}): choose another --port, or 0 for any free one."
        ) from None
    server.daemon_threads = True
    return server


def serve(
    explorer: LiveExplorer,
    port: int = 8765,
    log: Callable[[str], None] | None = None,
    ready: Callable[[str], None] = print,
) -> None:
    """Serve until Ctrl-C (then close the socket and return)."""
    server = make_server(explorer, port, log)
    url = f"http://{HOST}:{server.server_address[1]}/"
    ready(f"serving the explorer at {url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    ready("stopped")


def load_page(path: str | Path) -> Page:
    """A page written by ``Page.save``: its HTML and the scripts of the folder it names."""
    path = Path(path)
    if not path.is_file():
        raise LapelensError(f"--page {path} does not exist: build it first with `lapelens explore ... --out {path}`.")
    html = path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r'<script type="application/json" id="explorer-data">\{.*?"files":"([^"]+)"', html)
    if found is None:
        raise LapelensError(f"--page {path} is not an explorer page written by `lapelens explore --out`.")
    folder = path.parent / found.group(1)
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.js"))}
    if not files and "lapelensLayer(" not in html:
        raise LapelensError(f"--page {path}: its folder {folder} is missing; keep it beside the page.")
    return Page(html, found.group(1), files)
