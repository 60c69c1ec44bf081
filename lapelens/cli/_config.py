"""Command-line flags generated from a config dataclass: its attribute docstrings become ``--help``."""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import sys
import textwrap
import typing
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from lapelens.errors import LapelensError
from lapelens.lock import OutputLock

#: Namespace attribute holding the fields whose flags were given on the command line.
_EXPLICIT = "_explicit_fields"
#: Namespace attribute holding the config classes a command's flags came from.
_CONFIGS = "_config_classes"


class _Keep(dict):
    """``str.format_map`` mapping that leaves unknown ``{names}`` as they are (``{lang}.txt``)."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` for the string literals placed right after each field, base classes
    included; ``{NAME}`` in a docstring is the value of ``NAME`` in the class's module."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if k is not object and "__dataclass_fields__" in vars(k)]):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # made by make_dataclass: its fields carry their help as metadata
            continue
        tree = ast.parse(textwrap.dedent(source))
        body = tree.body[0].body  # type: ignore[attr-defined]
        names = vars(sys.modules[klass.__module__])
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                text = " ".join(nxt.value.value.split())
                try:
                    text = text.format_map(_Keep(names))
                except (ValueError, AttributeError, IndexError, KeyError):
                    pass
                docs[node.target.id] = text
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


def _hint(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _is_list(cls: type, name: str) -> bool:
    """A tuple field: given on the command line as a comma-separated list."""
    hint = _hint(cls, name)
    return typing.get_origin(hint) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(hint))


def _item_type(cls: type, name: str) -> type:
    hint = _hint(cls, name)
    for h in (hint, *typing.get_args(hint)):
        if typing.get_origin(h) is tuple:
            return typing.get_args(h)[0]
    return str


def _value_type(cls: type, name: str, default: Any) -> type:
    hint = _hint(cls, name)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and isinstance(args[0], type):
        return args[0]
    if isinstance(hint, type):
        return hint
    return type(default) if default is not None else str


def _choices(f: Any) -> Any:
    choices = f.metadata.get("choices")
    return choices() if callable(choices) else choices


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field: ``--snake-case``; tuples as comma-separated lists; bools as --x/--no-x.

    A field whose default is None (one that depends on other settings) says its default in its
    docstring. ``field(metadata=...)``: ``positional`` (an argument, not a flag), ``choices`` (a
    sequence, or a function returning one when the parser is built), ``help`` (for a field without
    a docstring, e.g. of a class made by ``make_dataclass``).
    """
    docs = attribute_docs(cls)
    parser.set_defaults(**{_CONFIGS: (*(parser.get_default(_CONFIGS) or ()), cls)})
    for f in fields(cls):
        if f.metadata.get("hidden"):
            continue
        flag = f.name if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
        text = (f.metadata.get("help") or docs.get(f.name, "")).replace("%", "%%")
        default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
        choices = _choices(f)
        if f.metadata.get("positional"):
            kw = {} if default is MISSING else {"nargs": "?", "default": default}
            parser.add_argument(flag, type=_value_type(cls, f.name, None), help=text, **kw)
        elif default is MISSING:
            parser.add_argument(
                flag, required=True, type=_value_type(cls, f.name, None), choices=choices, help=text, action=_STORE
            )
        elif isinstance(default, bool):
            parser.add_argument(flag, action=_BOOL, default=default, help=text)
        elif _is_list(cls, f.name):
            shown = " (comma-separated; default: %(default)s)" if default else " (comma-separated)"
            parser.add_argument(
                flag,
                default=",".join(map(str, default)) if default is not None else None,
                action=_STORE,
                help=text + shown,
            )
        elif default is None:
            parser.add_argument(
                flag, type=_value_type(cls, f.name, None), default=None, choices=choices, action=_STORE, help=text
            )
        else:
            parser.add_argument(
                flag,
                type=_value_type(cls, f.name, default),
                default=default,
                choices=choices,
                action=_STORE,
                help=f"{text} (default: %(default)s)".strip(),
            )


def split_list(text: str | None, flag: str, item: type = str) -> tuple | None:
    """``"a,b"`` -> ``("a", "b")``; None stays None; an empty list is refused."""
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise LapelensError(f"{flag} is empty: give comma-separated values.")
    try:
        return tuple(item(t) for t in items)
    except ValueError:
        raise LapelensError(f"{flag} must be comma-separated {item.__name__} values; got {text!r}.") from None


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config ``cls`` from parsed flags (lists split at commas; an empty list given is refused)."""
    kwargs = {}
    for f in fields(cls):
        if f.metadata.get("hidden"):
            continue
        value = getattr(args, f.name)
        if _is_list(cls, f.name) and isinstance(value, str):
            if f.default is not None and not value.replace(",", "").strip():
                value = ()  # the command's own check says why an empty list is wrong
            else:
                value = split_list(value, "--" + f.name.replace("_", "-"), _item_type(cls, f.name))
        kwargs[f.name] = value
    return cls(**kwargs)


def add_command(subparsers: Any, name: str, cls: type, run: Any, **parser_options: Any) -> argparse.ArgumentParser:
    """The sub-command ``name``: its flags are the fields of ``cls``, and ``run`` gets the config."""
    parser = subparsers.add_parser(name, **parser_options)
    add_config_arguments(parser, cls)
    parser.set_defaults(func=lambda args: run(config_from_args(cls, args)))
    return parser


def outputs(args: argparse.Namespace) -> list[tuple[Path, bool, str]]:
    """``(path, is_folder, flag)`` of every output the command's config marks (``lapelens.lock.OUTPUT``)."""
    found = []
    for cls in getattr(args, _CONFIGS, ()):
        for f in fields(cls):
            kind = f.metadata.get("output")
            if kind is None:
                continue
            value = getattr(args, f.name, None)
            if value is None and "output_default" in f.metadata:
                value = f.metadata["output_default"](args)
            if value is None:
                continue
            path = Path(value)
            folder = kind == "folder" and path.suffix not in f.metadata.get("file_suffixes", ())
            flag = f.name if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
            found.append((path, folder, flag))
    return found


def _torchrun_job() -> tuple[str | None, int]:
    """This process's torchrun job (None outside torchrun) and rank: ranks of one job share a lock."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, 0
    key = ":".join(os.environ.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"))
    return f"torchrun {key}", int(os.environ.get("RANK", "0"))


@contextmanager
def output_locks(args: argparse.Namespace, argv: Sequence[str] | None = None) -> Iterator[None]:
    """Hold the lock of every output of the command (``lapelens.lock``) while inside."""
    job, rank = _torchrun_job()
    command = f"lapelens {args.command}"
    line = ["lapelens", *(sys.argv[1:] if argv is None else argv)]
    with ExitStack() as stack:
        for path, folder, flag in outputs(args):
            stack.enter_context(
                OutputLock(path, command=command, folder=folder, flag=flag, argv=line, job=job, rank=rank)
            )
        yield
