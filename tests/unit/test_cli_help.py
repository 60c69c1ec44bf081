"""Every option of every command has help written for a CLI user, and help renders as typed."""

import argparse

import pytest

from lapelens.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command path, parser) for the top level and every sub-command, recursively."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


def test_every_option_of_every_command_has_help():
    missing = []
    seen = 0
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            seen += 1
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"lapelens {' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert seen > 100  # the walk reached the sub-commands' options
    assert not missing, missing


def test_help_text_renders_without_format_escapes(capsys):
    for path, parser in _commands(build_parser()):
        text = parser.format_help()
        assert "%%" not in text, path  # a description is not %-formatted: "95%%" would print as typed
        assert "%(" not in text, path


def test_top_level_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "language-specific neurons" in out and "lapelens reproduce" in out
    assert "add_parser" not in out and "in-process" not in out  # not the module's developer docstring


def test_perturb_seq_len_help_gives_the_number(capsys):
    from lapelens.defaults import SEQ_LEN

    for command in ("perturb", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert f"Tokens per chunk (default: {SEQ_LEN}" in out


def _help_line(action: argparse.Action) -> str:
    """The help an option has besides what the config machinery appends (its default, "comma-separated")."""
    text = action.help or ""
    for tail in ("(comma-separated; default: %(default)s)", "(comma-separated)", "(default: %(default)s)"):
        text = text.replace(tail, "")
    return text.strip()


def test_every_option_of_every_command_has_its_own_help_line():
    """Not only a default: a line saying what the option is, for every option of every (sub-)command."""
    empty = [
        f"lapelens {' '.join(path)} {'/'.join(a.option_strings) or a.dest}"
        for path, parser in _commands(build_parser())
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction))
        and not _help_line(a)
    ]
    assert not empty, empty


def test_every_command_is_built_from_a_config_dataclass():
    """Each command's options are the fields of its config dataclass, each with an attribute docstring."""
    import dataclasses
    import importlib

    from lapelens.cli import COMMANDS
    from lapelens.cli._config import attribute_docs

    for module_name in COMMANDS.values():
        module = importlib.import_module(f"lapelens.cli.{module_name}")
        configs = [
            c
            for c in vars(module).values()
            if dataclasses.is_dataclass(c) and isinstance(c, type) and c.__name__.endswith("Config")
        ]
        if module_name == "reproduce":  # its flags: ReproduceConfig, made from the registered experiments
            configs.append(module.reproduce_config())
        assert configs, module_name
        for cls in configs:
            docs = attribute_docs(cls)
            undocumented = [f.name for f in dataclasses.fields(cls) if not (docs.get(f.name) or f.metadata.get("help"))]
            assert not undocumented, (cls.__name__, undocumented)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["collect", "--out", "x"], "languages"),
        (["ses", "--out", "x"], "languages"),
        (["perturb"], "neurons"),
        (["figures", "run"], "formats"),
        (["corpus", "show", "embedded"], "splits"),
        (["corpus", "build"], "languages"),
        (["neurons", "show", "p"], "languages"),
        (["identify", "--out", "x"], "languages"),
    ],
)
def test_list_arguments_are_comma_separated_everywhere(argv, flag):
    args = build_parser().parse_args([*argv, f"--{flag}", "a,b"])
    assert getattr(args, flag) == "a,b"  # one value on the command line, split into a list by the config
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, f"--{flag}", "a", "b"])  # no space-separated lists
