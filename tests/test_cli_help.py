"""Every command and option of `nnserve` explains itself: help text, defaults, and the
environment variables each command reads."""

import argparse
import re

import pytest

from service import cli


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


COMMANDS = _commands()


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_argument_has_help_naming_its_default(name):
    for action in _arguments(COMMANDS[name]):
        label = "/".join(action.option_strings) or action.dest
        assert action.help and len(action.help) > 10, f"nnserve {name} {label}: no help"
        if not action.option_strings:
            continue  # a positional argument has no default to name
        default = action.default
        if isinstance(default, bool) or default is None or default == []:
            assert "default" in action.help, f"nnserve {name} {label}: no default in its help"
        else:
            shown = default.name if hasattr(default, "name") else str(default)
            assert shown in action.help, f"nnserve {name} {label}: default {shown} not in help"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_description_and_names_the_environment_it_reads(name):
    text = COMMANDS[name].format_help()
    assert COMMANDS[name].description
    variables = re.findall(r"^  ([A-Z][A-Z_]+)$", text, flags=re.MULTILINE)
    assert variables, f"nnserve {name} --help names no environment variable"
    assert set(variables) <= set(cli.ENVIRONMENT)


def test_the_top_level_help_speaks_to_users(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "nnserve up" in text
    for name in COMMANDS:
        assert f"\n    {name}" in text
    # The module's docstring is a note for developers; the help is not made of it.
    assert "import" not in text.lower()
