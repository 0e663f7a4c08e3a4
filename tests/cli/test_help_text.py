"""Every command's --help reads as a Unix tool's: argument names plain (PIPELINE, [RUN_ID]), no
typer artefacts ({PIPELINE}, [[RUN_ID]], PIPELINE <str>, <list[str]>)."""

import re

import pytest
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from agent_etl.cli.app import app


def commands(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, TyperGroup):
            out += commands(cmd, path + (name,))
        else:
            out.append(path + (name,))
    return out


ALL = commands(typer.main.get_command(app))


def test_every_command_is_listed():
    assert {("run",), ("validate",), ("runs", "show"), ("memory", "search"), ("audit", "verify")} <= set(ALL)


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_help_has_no_typer_artefacts(path):
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    text = result.output
    assert not re.search(r"(?<!\$)\{[A-Z_]+\}|\[\[|<(str|int|float|list\[str\]|path)>", text), text
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: agent-etl {' '.join(path)}"), usage


def test_arguments_are_named_plainly():
    runner = CliRunner()
    run = runner.invoke(app, ["run", "--help"], terminal_width=120).output
    assert "Usage: agent-etl run [OPTIONS] PIPELINE\n" in run
    assert re.search(r"^  PIPELINE +Pipeline YAML file\.", run, re.M)
    verify = runner.invoke(app, ["audit", "verify", "--help"], terminal_width=120).output
    assert "Usage: agent-etl audit verify [OPTIONS] [RUN_ID]\n" in verify


def test_run_s_bus_option_names_the_broker_it_takes():
    """run --bus takes nats://...: its help said only memory (docs/distributed.md, the worker's --bus)."""
    text = " ".join(CliRunner().invoke(app, ["run", "--help"], terminal_width=120).output.split())
    assert "nats://host:4222" in text and "agent-etl worker" in text
