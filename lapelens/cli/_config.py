"""Command-line flags generated from a config dataclass: its attribute docstrings become ``--help``."""

from __future__ import annotations

import argparse
import ast
import inspect
import textwrap
import typing
from dataclasses import MISSING, fields
from typing import Any

#: Namespace attribute holding the fields whose flags were given on the command line.
_EXPLICIT = "_explicit_fields"


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


def _tracked(base: type[argparse.Action]) -> type[argparse.Action]:
    """``base`` that also records its dest as given explicitly (a value equal to the default counts)."""

    class Tracked(base):  # type: ignore[misc, valid-type]
        def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
            super().__call__(parser, namespace, values, option_string)
            setattr(namespace, _EXPLICIT, getattr(namespace, _EXPLICIT, frozenset()) | {self.dest})

    return Tracked


_STORE = _tracked(argparse._StoreAction)
_BOOL = _tracked(argparse.BooleanOptionalAction)


def explicit_fields(args: argparse.Namespace) -> frozenset[str]:
    """The config fields whose flags the user passed (not those left at their defaults)."""
    return getattr(args, _EXPLICIT, frozenset())


def _value_type(cls: type, name: str, default: Any) -> type:
    if default is not None:
        return type(default)
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else str


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field: ``--snake-case``; tuples as comma-separated lists; bools as --x/--no-x.

    A field whose default is None (one that depends on other settings) says its default in its docstring.
    """
    docs = attribute_docs(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        text = docs.get(f.name, "")
        if f.default is MISSING:
            parser.add_argument(flag, required=True, help=text, action=_STORE)
        elif isinstance(f.default, bool):
            parser.add_argument(flag, action=_BOOL, default=f.default, help=text)
        elif isinstance(f.default, tuple):
            parser.add_argument(flag, default=",".join(map(str, f.default)), action=_STORE,
                                help=f"{text} (comma-separated; default: %(default)s)")
        elif f.default is None:
            parser.add_argument(flag, type=_value_type(cls, f.name, None), default=None, action=_STORE, help=text)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, action=_STORE,
                                help=f"{text} (default: %(default)s)".strip())


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    kwargs = {}
    for f in fields(cls):
        value = getattr(args, f.name)
        if isinstance(f.default, tuple) and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        kwargs[f.name] = value
    return cls(**kwargs)
