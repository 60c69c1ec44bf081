"""Run the paper's pipeline (statistics, every method, every experiment, every figure) on one model.

Its flags are ``ReproduceConfig``'s fields: the pipeline's own and every registered experiment's settings."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from lapelens.checkpoint import current_shard
from lapelens.cli._config import add_config_arguments, config_from_args, explicit_fields
from lapelens.cli.collect import log_resumes, process_group
from lapelens.constants import STAGE_RECORD
from lapelens.interrupt import note
from lapelens.pipeline import BaseConfig, flag, quick_settings, reproduce, reproduce_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="the whole paper on one model (default: the embedded one)",
        description=__doc__.split("\n\n")[0],
    )
    add_config_arguments(p, reproduce_config())
    quick = ", ".join(f"{flag(k)} {v}" for k, v in quick_settings().items())
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller budgets, same code path, noisier numbers: {quick}; a flag you pass keeps your value",
    )
    p.set_defaults(func=run)


def quick_config(cfg: BaseConfig, explicit: frozenset[str]) -> tuple[BaseConfig, str]:
    """``cfg`` with ``--quick``'s budgets except where a flag was given; and a line saying what changed."""
    quick = quick_settings()
    changes = {k: v for k, v in quick.items() if k not in explicit and getattr(cfg, k) != v}
    kept = [flag(k) for k in quick if k in explicit]
    line = "--quick: " + (
        ", ".join(f"{flag(k)} {getattr(cfg, k)} -> {v}" for k, v in changes.items()) or "nothing to change"
    )
    if kept:
        line += f" (kept as given: {', '.join(kept)})"
    return replace(cfg, **changes), line


def saved_stages(out: Path) -> list[str]:
    """The stages of a run folder that were saved (each with its record), in the order they finished:
    a re-run with the same settings reuses them."""
    records = [p for p in out.glob(f"*/{STAGE_RECORD}") if p.is_file()] if out.is_dir() else []
    return [p.parent.name for p in sorted(records, key=lambda p: p.stat().st_mtime)]


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(reproduce_config(), args)
    if args.quick:
        cfg, line = quick_config(cfg, explicit_fields(args))
        print(line)
    # Under torchrun every rank counts its share of the statistics; rank 0 alone runs the rest.
    try:
        with process_group(cfg.device) as device, log_resumes("reproduce"):
            lead = current_shard().rank == 0  # asked before: reproduce leaves the group after the statistics
            summary = reproduce(replace(cfg, device=device))  # ranks > 0 log nothing and return {} after the statistics
    except KeyboardInterrupt as exc:
        stages = saved_stages(Path(cfg.out))
        note(exc, f"{len(stages)} stages saved ({', '.join(stages)})" if stages else "no stage finished yet")
        raise
    if lead:
        print(json.dumps({k: summary[k] for k in ("perturbation",) if k in summary}, indent=1, default=str))
        print(f"results, tables and figures in {cfg.out}")
