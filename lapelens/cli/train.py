"""Train a tokenizer and a small LLaMA-architecture model from scratch on a lapelens corpus."""

from __future__ import annotations

import argparse

from lapelens.cli._config import add_config_arguments, config_from_args
from lapelens.embedded.train import TrainConfig, reevaluate, train


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a small multilingual model from scratch (how the embedded model was made)",
        description=__doc__,
    )
    add_config_arguments(p, TrainConfig)
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="do not train: evaluate the model in --out on --corpus (e.g. after a corpus rebuild) and "
        "rewrite its training summary and model card",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    if args.reevaluate:
        import json

        print(json.dumps(reevaluate(args.out, args.corpus), indent=1))
        return
    train(config_from_args(TrainConfig, args))
