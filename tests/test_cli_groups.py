"""The command line as a package of command groups: each group alone shows its own help."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli import main

GROUPS = ("topics", "contacts", "contact", "suppress", "bounces", "campaign", "policy", "apikey")


@pytest.mark.parametrize("group", GROUPS)
def test_a_group_named_alone_prints_its_own_help_and_exits_2(
    group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([group]) == 2
    printed = capsys.readouterr().out
    name = "contacts" if group == "contact" else group  # an alias shows the group's name
    assert printed.startswith(f"usage: gateway {name} [-h] ACTION ..."), printed


def test_gateway_alone_prints_the_list_of_commands_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    printed = capsys.readouterr().out
    assert printed.startswith("usage: gateway [-h] COMMAND ...")
    assert "campaign" in printed and "apikey" in printed


def attribute_reads(wanted: Callable[[ast.Attribute], bool]) -> list[str]:
    """`file:line: .name` for each attribute read in gateway/cli/ that `wanted` picks."""
    package = Path(__file__).resolve().parent.parent / "gateway" / "cli"
    return [
        f"{path.name}:{node.lineno}: .{node.attr}"
        for path in sorted(package.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and wanted(node)
    ]


def test_the_command_line_reads_no_private_attribute_of_another_object() -> None:
    """argparse's `_subparsers`, `gw.store`'s internals…: a private name read from outside
    breaks on the next release of what owns it."""
    assert attribute_reads(lambda a: a.attr.startswith("_") and not a.attr.startswith("__")) == []


def test_the_command_line_goes_through_the_gateway_facade_not_its_store_or_signer() -> None:
    assert (
        attribute_reads(
            lambda a: (
                a.attr in ("store", "signer")
                and isinstance(a.value, ast.Name)
                and a.value.id == "gw"
            )
        )
        == []
    )
