"""Check a committed explorer page against its run, independently of the code that built it.

    python scripts/check_explorer.py figures/embedded/explorer.html runs/embedded [--neurons 5] [--seed 0]

Opens the page offline in headless Chromium (Debian's chromium, Playwright; network blocked) and,
for every LAPE neuron count of the overview and for ``--neurons`` neurons drawn at random from the
LAPE selection, compares

- the overview: every LAPE neuron listed, and no other;
- the firing probabilities shown with ``count / n`` read from the run's ``stats.safetensors``
  with plain safetensors (3 decimals);
- the 10 promoted and 10 suppressed tokens with ``W_out[neuron] @ W_U`` computed from the HF
  model's own modules (``down_proj.weight[:, neuron] @ lm_head.weight.T``), loaded with
  transformers, not through lapelens;
- the page's token search (its offline index, which holds the tokens of the page's text) for the
  token each drawn neuron promotes most among the indexed ones: the neurons listed first equal the
  top of ``down_proj.weight.T @ lm_head.weight[token]`` over every layer.

Prints one line per check; exit code 1 if any differs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def _model_folder(run: Path) -> Path:
    """The HF folder of the run's model: the embedded one, a named pretrained one (converted from
    its GGUF file), or the folder itself (the only lapelens calls: where the weights are)."""
    from lapelens.models import embedded_model_dir
    from lapelens.pretrained import PRETRAINED, hf_folder

    name = json.loads((run / "config.json").read_text())["model"]
    if name == "embedded":
        return embedded_model_dir()
    return hf_folder(name) if name in PRETRAINED else Path(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("run", type=Path)
    ap.add_argument("--neurons", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from _offline_page import open_offline
    from playwright.sync_api import sync_playwright
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stats = load_file(str(args.run / "stats" / "stats.safetensors"))
    marker = json.loads((args.run / "stats" / "stats.json").read_text())
    languages, count = marker["languages"], stats["count"]
    if marker.get("schema_version", 1) < 2:  # saved as [layer, neuron, lang] before schema 2
        count = count.permute(2, 0, 1)
    prob = count.double() / stats["n"].double()[:, None, None]  # [lang, layer, neuron]
    lape = load_file(str(args.run / "neurons_lape" / "neurons.safetensors"))["mask"]  # [lang, layer, neuron]
    selected = sorted(map(tuple, lape.any(dim=0).nonzero().tolist()))
    hf = AutoModelForCausalLM.from_pretrained(_model_folder(args.run))
    tokenizer = AutoTokenizer.from_pretrained(_model_folder(args.run))
    w_u = hf.lm_head.weight.detach().float()  # the saved dtype may be bf16: rank in float32
    w_down = torch.stack([layer.mlp.down_proj.weight.detach().T for layer in hf.model.layers])  # layer neuron d_model
    failures = 0
    folder = args.page.parent / (args.page.stem + "_files")
    indexed = sorted(  # the token ids of the page's search shards, read as plain JSON
        i
        for shard in folder.glob("search_*.js")
        for entries in json.loads(shard.read_text(encoding="utf-8").split(",", 1)[1].rstrip().rstrip(";")[:-1]).values()
        for i, _, _ in entries
    )

    def check(ok: bool, what: str) -> None:
        nonlocal failures
        failures += not ok
        print(("ok   " if ok else "FAIL ") + what)

    with sync_playwright() as p:
        browser, page, errors = open_offline(p, args.page)
        page.select_option("#method-select", "lape")
        rows = page.locator("#neuron-list tr.neuron-row").all()
        listed = sorted((int(r.get_attribute("data-layer")), int(r.get_attribute("data-neuron"))) for r in rows)
        check(
            listed == selected, f"overview lists {len(listed)} LAPE neurons; the run's neurons_lape has {len(selected)}"
        )
        for layer, neuron in random.Random(args.seed).sample(selected, min(args.neurons, len(selected))):
            page.select_option("#search-kind", "neuron")
            page.fill("#search-input", f"{layer}:{neuron}")
            page.click("#search-button")
            page.wait_for_function(f"document.getElementById('panel-firing').dataset.neuron === '{layer}:{neuron}'")
            shown = {
                t.get_attribute("data-label"): float(t.text_content())
                for t in page.locator("svg.firing text.value").all()
            }
            want = {l: prob[k, layer, neuron].item() for k, l in enumerate(languages)}
            # 3 decimals as shown (JavaScript rounds a tie such as 0.5625 up, Python to even: compare numbers)
            check(
                shown.keys() == want.keys() and all(abs(shown[l] - want[l]) <= 5e-4 + 1e-12 for l in want),
                f"L{layer} N{neuron} firing probabilities {shown}",
            )
            effect = hf.model.layers[layer].mlp.down_proj.weight.detach()[:, neuron].float() @ w_u.T
            for cls, top in (
                ("promoted", effect.topk(10).indices),
                ("suppressed", effect.topk(10, largest=False).indices),
            ):
                ids = [int(t.get_attribute("data-token-id")) for t in page.locator(f"#panel-logits .{cls} td.t").all()]
                check(ids == top.tolist(), f"L{layer} N{neuron} {cls} token ids {ids[:5]}... = W_out @ W_U's")
            token = indexed[int(effect[indexed].argmax())]
            text = tokenizer.decode([token])
            if "\ufffd" in text or "\n" in text:  # a byte piece is not in the index; a text box holds no newline
                continue
            page.select_option("#search-kind", "token")
            page.fill("#search-input", text)
            page.click("#search-button")
            page.wait_for_function("document.getElementById('search-status').textContent !== 'searching\u2026'")
            table = page.locator(f"#search-results table.search-table[data-token-id='{token}']")
            check(table.count() == 1, f"search {text!r}: the page's index has token {token}")
            got = [int(r.get_attribute("data-flat")) for r in table.locator("tr.neuron-row").all()]
            column = (w_down.float() @ w_u[token]).flatten()
            check(
                got == column.topk(len(got)).indices.tolist(),
                f"search {text!r}: neurons {got[:3]}... = the top of W_out . W_U[token]",
            )
        browser.close()
    check(not errors, f"page errors or network requests: {errors}")
    print(f"{failures} of the checks failed" if failures else "every check passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
