"""Apply an official-format ``*.neuron.pth`` with plain Hugging Face forward hooks, independently of lapelens.

The official scripts deactivate language k's neurons by zeroing them where the down projection
reads them (``act_fn(gate) * up`` for gated MLPs). Here that is a ``forward_pre_hook`` on every
``mlp.down_proj`` of a transformers model; nothing of lapelens' hooks or TransformerLens is used.
Perplexity is computed on held-out text (the embedded corpus' valid split by default), packed into
``--seq-len`` chunks exactly as lapelens packs them, and the script prints the matrix of relative
perplexity changes (row: language deactivated, column: language evaluated) and its summary: the
mean diagonal over the mean off-diagonal entry, and in how many columns the diagonal is largest.

    python scripts/check_official_mask.py figures/smollm2-135m/lape.neuron.pth \
        --model ~/.cache/lapelens/models/smollm2-135m --tokens 2048
"""

from __future__ import annotations

import argparse
import math
import time

import torch


def chunks(tokenizer, texts, seq_len: int, max_tokens: int) -> torch.Tensor:
    """[sep] + tokens per document, concatenated, cut into full chunks (lapelens' packing)."""
    sep = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    buf, out = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        buf += [sep] + ids
        while len(buf) >= seq_len and len(out) < max_tokens // seq_len:
            out.append(buf[:seq_len])
            buf = buf[seq_len:]
        if len(out) >= max_tokens // seq_len:
            break
    return torch.tensor(out)


def perplexity(model, toks: torch.Tensor, batch: int = 4) -> float:
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(toks), batch):
            x = toks[i : i + batch]
            logits = model(x).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"
            )
            nll += loss.item()
            n += x[:, 1:].numel()
    return math.exp(nll / n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mask", help="official .neuron.pth: [language][layer] -> neuron indices")
    p.add_argument(
        "--model", required=True, help="HF model folder (e.g. the converted GGUF in ~/.cache/lapelens/models/NAME)"
    )
    p.add_argument("--languages", default="en,zh,fr,es,vi,id,ja", help="the mask's languages, in its order")
    p.add_argument("--tokens", type=int, default=2048, help="held-out tokens per language")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--offset-docs", type=int, default=0, help="skip this many valid documents (other held-out text)")
    args = p.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lapelens.corpus import load_corpus  # reading text only

    start = time.time()
    langs = args.languages.split(",")
    mask = torch.load(args.mask)
    assert len(mask) == len(langs), f"{len(mask)} languages in the mask, {len(langs)} named"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    docs = load_corpus("embedded", split="valid", languages=langs)
    data = {l: chunks(tok, docs[l][args.offset_docs :], args.seq_len, args.tokens) for l in langs}
    downs = [layer.mlp.down_proj for layer in model.model.layers]
    current: list[torch.Tensor] = []

    def hook(i):
        def pre(module, inputs):
            if current and len(current[i]):
                x = inputs[0].clone()
                x[..., current[i]] = 0
                return (x,)

        return pre

    handles = [d.register_forward_pre_hook(hook(i)) for i, d in enumerate(downs)]
    base = {l: perplexity(model, data[l]) for l in langs}
    rows = {}
    for k, src in enumerate(langs):
        current[:] = [t.long() for t in mask[k]]
        rows[src] = {l: perplexity(model, data[l]) / base[l] - 1 for l in langs}
        current.clear()
        print(src, " ".join(f"{l}:{100 * v:+.1f}%" for l, v in rows[src].items()), flush=True)
    for h in handles:
        h.remove()
    diag = sum(rows[l][l] for l in langs) / len(langs)
    off = sum(rows[s][l] for s in langs for l in langs if s != l) / (len(langs) * (len(langs) - 1))
    largest = sum(max(langs, key=lambda s: rows[s][l]) == l for l in langs)
    print(f"base PPL {', '.join(f'{l} {v:.2f}' for l, v in base.items())}")
    print(
        f"diagonal mean {100 * diag:+.1f}%, off-diagonal mean {100 * off:+.1f}%, ratio {diag / off:.2f}; "
        f"diagonal largest in {largest} of {len(langs)} columns; {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
