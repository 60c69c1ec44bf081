"""`lapelens train`: tokenizer + LLaMA-architecture model from scratch on a lapelens corpus."""

from __future__ import annotations

import argparse
from dataclasses import fields

from lapelens.train import TrainConfig, train


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a small multilingual model from scratch (the embedded default)",
                       description=__doc__)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.name == "out":
            p.add_argument(flag, required=True, help="output folder (HF format: config, weights, tokenizer, model card)")
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            p.add_argument(flag, default=",".join(default), help="comma-separated (default: %(default)s)")
        else:
            p.add_argument(flag, type=type(default), default=default, help="default: %(default)s")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    kwargs = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    kwargs["languages"] = tuple(l.strip() for l in kwargs["languages"].split(",") if l.strip())
    train(TrainConfig(**kwargs))
