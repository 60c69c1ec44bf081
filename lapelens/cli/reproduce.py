"""Run the paper's pipeline (statistics, every method, every experiment, every figure) on one model."""

from __future__ import annotations

import argparse
import json

from lapelens.cli._config import add_config_arguments, config_from_args
from lapelens.pipeline import ReproduceConfig, reproduce


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="the whole paper on one model (default: the embedded one)", description=__doc__)
    add_config_arguments(p, ReproduceConfig)
    p.add_argument("--quick", action="store_true", help="small budgets (a few minutes): same code path, noisier numbers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(ReproduceConfig, args)
    if args.quick:
        defaults = ReproduceConfig(out=cfg.out)
        changed = {k: v for k, v in vars(cfg).items() if v != getattr(defaults, k) and k != "out"}
        cfg = ReproduceConfig.quick(cfg.out, **changed)
    summary = reproduce(cfg)
    print(json.dumps({k: summary[k] for k in ("perturbation",) if k in summary}, indent=1, default=str))
    print(f"results, tables and figures in {cfg.out}")
