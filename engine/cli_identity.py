"""Who the command line acts as: its configured identity, never a free ``--by`` name.

``tradeflow signal`` and the verbs that act (pause, resume, retry, cancel, ``batch --close``)
act as ``TRADEFLOW_PRINCIPAL`` (default: the OS user) holding the roles in
``TRADEFLOW_PRINCIPAL_ROLES`` (a comma list; default none), read once per invocation
(:mod:`engine.cli_context`).
An await node whose signal needs a role refuses it from a CLI not configured with that role,
and the error says what to set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from engine.cli_context import cli_settings
from engine.config import Settings
from engine.errors import SignalRefused
from engine.principal import Principal

F = TypeVar("F", bound=Callable[..., Any])

SET_IDENTITY = ("the CLI acts as TRADEFLOW_PRINCIPAL (default: the OS user) with the roles in "
                "TRADEFLOW_PRINCIPAL_ROLES (a comma list)")


def cli_principal() -> Principal:
    """The CLI's identity (see the module docstring)."""
    return cli_settings(Settings).principal()


def refusal_hint(exc: SignalRefused) -> str:
    """What to set when a refused signal is about who the CLI is ("" otherwise)."""
    if exc.code == "role":
        return f"; {SET_IDENTITY}: set them to act as someone holding that role"
    if exc.code == "same_principal":
        return "; another person sends it, as their own TRADEFLOW_PRINCIPAL"
    return ""


def _refuse_by(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise click.UsageError(f"--by is gone: {SET_IDENTITY}; set them instead")


def no_by_option(command: F) -> F:
    """A hidden ``--by`` that says what replaced it (scripts that passed it fail with the fix)."""
    return click.option("--by", hidden=True, expose_value=False, callback=_refuse_by)(command)
