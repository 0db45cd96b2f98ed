"""``tradeflow console``: serve the web console; manage its users and API tokens.

\b
    tradeflow console serve [--host 127.0.0.1] [--port 8000]
    tradeflow console users add NAME --role ROLE --password-stdin
    tradeflow console users list | users remove NAME
    tradeflow console users role NAME ROLE | users password NAME --password-stdin
    tradeflow console token create NAME [--label L] | token list | token revoke ID
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from console.config import ConsoleSettings
from console.errors import ConsoleError
from console.users import Role
from engine.cli_context import CliContext, cli_settings, notice
from engine.cli_errors import ErrorGroup, read_only, rerun
from engine.config import Settings
from engine.errors import TradeflowError

out = Console()
err = Console(stderr=True)


class _Group(ErrorGroup):
    """The console's groups: its own errors as one line too."""

    known = (ConsoleError, TradeflowError)


def _users() -> Any:
    from console.app import build_context

    return build_context(cli_settings(ConsoleSettings), cli_settings(Settings), engine=False,
                         notice=notice).users  # no engine needed to read users


def _admin() -> Any:
    """The user administration the admin pages use (:class:`console.user_admin.UserAdmin`), recorded in the
    audit log as the CLI's identity (``TRADEFLOW_PRINCIPAL``, :mod:`engine.cli_identity`)."""
    from console.app import build_context
    from console.user_admin import UserAdmin
    from engine.cli_identity import cli_principal

    context = build_context(cli_settings(ConsoleSettings), cli_settings(Settings), notice=notice)
    return UserAdmin(context.users, context.engine.record_audit, cli_principal())


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("password", hide_input=True, confirmation_prompt=True)


@click.group(cls=_Group, invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_context
def console(ctx: click.Context, host: str, port: int) -> None:
    """The web console (runs, instances, definitions, reviews; /api, /metrics). Without a verb: serve."""
    ctx.ensure_object(CliContext)  # this invocation's settings, read once (the tradeflow group's when under it)
    if ctx.invoked_subcommand is None:
        serve(host, port)


def serve(host: str, port: int) -> None:
    """Run the console with uvicorn until Ctrl-C."""
    import uvicorn

    from console.app import build_context, create_app

    context = build_context(cli_settings(ConsoleSettings), cli_settings(Settings), notice=notice)
    if not context.users.list():
        err.print("[yellow]warning:[/yellow] no console users yet: add one with "
                  "`tradeflow console users add NAME --role admin --password-stdin`")
    out.print(f"tradeflow console on http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(create_app(context), host=host, port=port, log_level="warning", proxy_headers=False)


@console.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@rerun(safe=True, why="it only serves; a second one on the same port is refused")
def serve_command(host: str, port: int) -> None:
    """Serve the console (same as `tradeflow console`)."""
    serve(host, port)


@console.group(cls=_Group)
def users() -> None:
    """Console users and their roles (viewer, operator, pm, admin)."""


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]), help="What the user may do.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (first line).")
@rerun(safe=True, why="the user is saved again with the same role and password")
def users_add(name: str, role: str, password_stdin: bool) -> None:
    """Add (or replace) user NAME; the password comes from stdin or a hidden prompt."""
    user = _admin().replace(name, role, _password(password_stdin))
    out.print(f"user {user.name} ({user.role.value}) saved")


@users.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice([r.value for r in Role]))
@rerun(safe=True, why="the user keeps the role given")
def users_role(name: str, role: str) -> None:
    """Give user NAME another ROLE (their password stays)."""
    user = _admin().set_role(name, role)
    out.print(f"user {user.name} is now {user.role.value}")


@users.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (first line).")
@rerun(safe=True, why="the user keeps the password given")
def users_password(name: str, password_stdin: bool) -> None:
    """Give user NAME a new password (every session of theirs ends)."""
    _admin().set_password(name, _password(password_stdin))
    out.print(f"password of {name} changed; their sessions ended")


@users.command("list")
@read_only
def users_list() -> None:
    """Every user with their role."""
    table = Table("user", "role", "created (UTC)")
    for user, created in _users().list():
        table.add_row(user.name, user.role.value, _utc_minute(created))
    out.print(table)


@users.command("remove")
@click.argument("name")
@rerun(safe=True, why="a removed user stays removed, and a token left behind no longer authenticates")
def users_remove(name: str) -> None:
    """Remove user NAME and their API tokens (their sessions end at once)."""
    _admin().remove(name)
    out.print(f"user {name} removed")


@console.group(cls=_Group)
def token() -> None:
    """API tokens for scripts (Authorization: Bearer TOKEN); a token acts with its user's role."""


@token.command("create")
@click.argument("user")
@click.option("--label", default="", help="What the token is for.")
@rerun(safe=False, why="a token may have been created already: look with `tradeflow console token list` "
                       "and revoke the one nobody received")
def token_create(user: str, label: str) -> None:
    """Create a token acting as USER; it is printed once and stored only as a hash."""
    value, token_id = _admin().create_token(user, label)
    err.print(f"token {token_id} for {user} (keep it; it is not shown again):")
    click.echo(value)


@token.command("list")
@read_only
def token_list() -> None:
    """Every token's id, user and label (never the token)."""
    table = Table("id", "user", "label", "created (UTC)")
    for token_id, record in _users().tokens():
        table.add_row(token_id, record["user"], record.get("label", ""), _utc_minute(record["created_at"]))
    out.print(table)


@token.command("revoke")
@click.argument("token_id")
@rerun(safe=True, why="a token already revoked is reported as missing; nothing else changes")
def token_revoke(token_id: str) -> None:
    """Revoke the token with id TOKEN_ID (from `token list`)."""
    _admin().revoke_token(token_id)
    out.print(f"token {token_id} revoked")


def _utc_minute(timestamp: float) -> str:
    """A stored Unix time as the tables show it: ``YYYY-MM-DD HH:MM`` in UTC."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")
