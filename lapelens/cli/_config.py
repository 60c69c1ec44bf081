"""Command-line flags generated from a config dataclass: its attribute docstrings become ``--help``."""

from __future__ import annotations

import argparse
import ast
import inspect
import textwrap
from dataclasses import MISSING, fields
from typing import Any


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` for the string literals placed right after each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field: ``--snake-case``; tuples as comma-separated lists; bools as --x/--no-x."""
    docs = attribute_docs(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        text = docs.get(f.name, "")
        if f.default is MISSING:
            parser.add_argument(flag, required=True, help=text)
        elif isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        elif isinstance(f.default, tuple):
            parser.add_argument(flag, default=",".join(map(str, f.default)), help=f"{text} (comma-separated; default: %(default)s)")
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, help=f"{text} (default: %(default)s)".strip())


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    kwargs = {}
    for f in fields(cls):
        value = getattr(args, f.name)
        if isinstance(f.default, tuple) and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        kwargs[f.name] = value
    return cls(**kwargs)
