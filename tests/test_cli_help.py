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
