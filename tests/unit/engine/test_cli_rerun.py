"""Every CLI command declares whether re-running it after a failure is safe (``engine.cli_errors``)."""

from __future__ import annotations

import click
import redis

from engine.cli import _load_plugins_only, main
from engine.cli_errors import declared_rerun, unreachable_line
from engine.errors import RedisUnavailable


def _leaves(group: click.Group, path: str) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _leaves(command, f"{path} {name}")
        else:
            found.append((f"{path} {name}", command))
    return found


def test_every_command_declares_whether_rerunning_it_is_safe() -> None:
    _load_plugins_only()
    leaves = _leaves(main, "tradeflow")
    assert len(leaves) > 25
    missing = [path for path, command in leaves if declared_rerun(command) is None]
    assert not missing, f"declare @rerun(...) or @read_only on: {missing}"
    assert declared_rerun(main.commands["pm"].commands["approve"]).safe  # type: ignore[attr-defined]
    assert not declared_rerun(main.commands["start"]).safe


def test_the_line_names_the_command_and_its_declaration() -> None:
    _load_plugins_only()
    pm = main.commands["pm"]
    ctx = click.Context(pm, info_name="pm", parent=click.Context(main, info_name="tradeflow"))
    ctx.invoked_subcommand = "submit"
    line = unreachable_line(pm, ctx, redis.ConnectionError("Error 111 connecting to 127.0.0.1:1.\nConnection refused."))
    assert "\n" not in line
    assert line.startswith("Redis is unreachable") and "Connection refused" in line
    assert "Re-running `tradeflow pm submit` is safe (submitting is idempotent" in line
    line = unreachable_line(pm, ctx, RedisUnavailable("Redis at redis://h:1/0 does not answer."))
    assert line.endswith("Nothing was done: re-running `tradeflow pm submit` is safe.")
