"""A named pretrained model through lapelens against transformers' own load of its GGUF file.

Loads the model twice: ``lapelens.load_model(NAME)`` (the converted float32 folder booted through
TransformerBridge) and ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` on the GGUF
file its packages ship (joined and checked as lapelens joins it), then prints the largest logit
difference on an English, a Chinese and a French text and whether greedy generation gives the same
tokens. Exit status 1 if a difference exceeds ``--tolerance``.

    python scripts/check_pretrained.py qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

TEXTS = {
    "en": "The quick brown fox jumps over the lazy dog, and then it runs back into the forest.",
    "zh": "今天的天气很好，我们一起去公园散步，然后在湖边喝茶。",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux, puis il retourne dans la forêt.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="a named pretrained model (lapelens.pretrained.PRETRAINED)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--new-tokens", type=int, default=12)
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    import lapelens
    from lapelens.pretrained import PRETRAINED, default_cache_dir

    start = time.time()
    model = lapelens.load_model(args.name)
    gguf = PRETRAINED[args.name].locate(default_cache_dir())
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    worst = 0.0
    for lang, text in TEXTS.items():
        tokens = model.to_tokens(text)
        with torch.no_grad():
            ours, theirs = model(tokens), reference(tokens).logits
            diff = (ours - theirs).abs().max().item()
            a = model.generate(tokens, max_new_tokens=args.new_tokens, do_sample=False, verbose=False)
            b = reference.generate(tokens, max_new_tokens=args.new_tokens, do_sample=False)
        same = a.tolist() == b.tolist()
        worst = max(worst, diff)
        print(
            f"{lang}: {tokens.shape[1]} tokens, largest logit difference {diff:.2e}; greedy {args.new_tokens} tokens "
            f"{'identical' if same else 'DIFFER'}: {model.tokenizer.decode(a[0, tokens.shape[1] :])!r}"
        )
    print(f"{args.name}: largest difference {worst:.2e} (tolerance {args.tolerance:g}); {time.time() - start:.0f} s")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
