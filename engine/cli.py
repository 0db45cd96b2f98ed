"""The ``tradeflow`` command line.

Verbs mirror the Python API. Plugins (entry point group ``tradeflow.plugins``) add their own
command groups; the engine itself knows nothing of them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from engine import batch_cli, limits_cli, plugins
from engine.api import instance_json
from engine.cli_context import CliContext, cli_engine, cli_settings, notice
from engine.cli_errors import ErrorGroup, read_only, rerun
from engine.cli_identity import cli_principal, no_by_option, refusal_hint
from engine.config import Settings
from engine.connections import state_url
from engine.definitions.diagram import to_mermaid
from engine.definitions.schema import json_schema
from engine.definitions.validation import validate_file
from engine.errors import DefinitionError, SignalRefused
from engine.instance import InstanceStatus
from engine.ops.archive import archive_runs, read_archived
from engine.ops.demo import run_demo
from engine.ops.embedded import stop_embedded
from engine.ops.fleet import Fleet, FleetSpec, combined_fleets
from engine.ops.progress import show_progress
from engine.roles import declared_roles

# Lines are never broken by rich (soft_wrap): a path or an id stays on one line for grep and scripts,
# and a terminal wraps long lines itself. Tables still fit the terminal's width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

#: Re-running any of these after a failure half-way is safe: each acts only on what is still
#: in the state it changes (the engine's compare-and-set), so what was done is not done twice.
_STATE_CHANGE = "it changes only what is still in the state it acts on"


def _declared_roles() -> frozenset[str]:
    """The roles definitions may name: ``TRADEFLOW_ROLES`` of this invocation and the plugins'."""
    return declared_roles(cli_settings(Settings))


def _problems(exc: DefinitionError) -> None:
    """One ``FILE: /json/pointer: message`` line per problem, never wrapped (scripts parse them)."""
    for line in str(exc).splitlines():
        click.echo(line, err=True)


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line, never wrapped
    sys.exit(code)


class _Group(ErrorGroup):
    """The engine's groups: a definition's problems one line each (scripts parse them), other
    errors and an unreachable Redis as :class:`engine.cli_errors.ErrorGroup` reports them."""

    def report(self, exc: BaseException) -> None:
        """One ``FILE: /json/pointer: message`` line per problem of a definition; else one error line."""
        if isinstance(exc, DefinitionError):
            _problems(exc)
        else:
            super().report(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tradeflow")
@click.pass_context
def main(ctx: click.Context) -> None:
    """tradeflow: business processes as JSON state machines, run by Celery workers on Redis.

    \b
    Start here:
      tradeflow demo                         the whole thing, end to end
      tradeflow definitions validate F.json  check a definition
      tradeflow runs                         runs and their progress
      tradeflow inspect ID                   one instance and its history

    Redis comes from TRADEFLOW_REDIS_URL (when set, the only one ever used); unset, the
    local default or the embedded one (`tradeflow redis start`), said on stderr. Redis
    unreachable: one line saying whether re-running is safe, exit status 75.
    """
    ctx.ensure_object(CliContext)  # the settings of this invocation, read once, on first use


# -- definitions ------------------------------------------------------------------------------


@main.group(cls=_Group)
def definitions() -> None:
    """Validate, publish and look at workflow definitions."""


@definitions.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@read_only
def definitions_validate(files: tuple[Path, ...]) -> None:
    """Check definition FILES; print every problem as FILE: /json/pointer: message (exit 1)."""
    _load_plugins_only()
    failed = False
    for path in files:
        try:
            definition = validate_file(path, roles=_declared_roles)
        except DefinitionError as exc:
            failed = True
            _problems(exc)
        except OSError as exc:
            failed = True
            click.echo(f"{path}: /: cannot read: {exc.strerror}", err=True)
        else:
            console.print(f"{path}: ok ({definition.name}, {len(definition.nodes)} nodes)", highlight=False)
    sys.exit(1 if failed else 0)


@definitions.command("schema")
@click.option("--write", "target", type=click.Path(dir_okay=False, path_type=Path),
              help="Write it to this file (e.g. definitions/schema.json) instead of printing it.")
@rerun(safe=True, why="it writes the same schema again; it never touches Redis")
def definitions_schema(target: Path | None) -> None:
    """The JSON Schema (Draft 2020-12) of the definition format, for editors and CI."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if target is None:
        click.echo(text, nl=False)
        return
    target.write_text(text, encoding="utf-8")
    console.print(f"wrote {target}", highlight=False)


@definitions.command("publish")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--alias", help="Also point this alias (e.g. production) at the published version.")
@rerun(safe=True, why="the same content publishes as the same version")
def definitions_publish(files: tuple[Path, ...], alias: str | None) -> None:
    """Validate and publish FILES as new immutable versions (same content: same version)."""
    engine = cli_engine()
    for path in files:
        definition = validate_file(path, roles=_declared_roles)
        version = engine.publish(definition, alias=alias)
        console.print(f"{definition.name} version {version}" + (f" (alias {alias})" if alias else ""))


@definitions.command("list")
@read_only
def definitions_list() -> None:
    """Every definition with its versions and aliases."""
    engine = cli_engine()
    table = Table("name", "versions", "aliases")
    for entry in engine.catalog():
        table.add_row(entry.name, ", ".join(map(str, entry.versions)),
                      ", ".join(f"{a}→{v}" for a, v in sorted(entry.aliases.items())))
    console.print(table)


@definitions.command("show")
@click.argument("name")
@click.option("--version", "ref", help="Version number or alias (default: latest).")
@click.option("--mermaid", is_flag=True, help="Print a Mermaid state diagram instead of the JSON.")
@read_only
def definitions_show(name: str, ref: str | None, mermaid: bool) -> None:
    """Print a published definition (or its diagram)."""
    engine = cli_engine()
    definition = engine.definition(name, ref)
    if mermaid:
        click.echo(to_mermaid(definition))
    else:
        click.echo(definition.to_json())


@definitions.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
@rerun(safe=True, why="it sets the alias to the same version again")
def definitions_alias(name: str, alias: str, version: int) -> None:
    """Point ALIAS of NAME at VERSION (e.g. production, canary)."""
    cli_engine().set_alias(name, alias, version)
    console.print(f"{name} {alias} → version {version}")


# -- instances --------------------------------------------------------------------------------


def _json_arg(value: str | None) -> Any:
    if value is None:
        return {}
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc


@main.command()
@click.argument("workflow")
@click.option("--data", help="Initial data as JSON, or @file.json.")
@click.option("--version", "ref", help="Version number or alias (default: latest).")
@click.option("--run", default="adhoc", show_default=True,
              help="Run label grouping instances (a shadow's default: adhoc-shadow).")
@click.option("--shadow", is_flag=True, help="A shadow: it stops at the definition's shadow stops, before any "
              "external effect, in a run of its own (see docs/shadow.md).")
@rerun(safe=False, why="the instance may have been started already; look with `tradeflow list --run RUN`")
def start(workflow: str, data: str | None, ref: str | None, run: str, shadow: bool) -> None:
    """Start one instance of WORKFLOW."""
    engine = cli_engine()
    iid = engine.start(workflow, _json_arg(data), version=ref, run=run, shadow=shadow)
    click.echo(iid)


@main.command()
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@read_only
def inspect(instance_id: str, as_json: bool) -> None:
    """An instance's state and its activity history."""
    engine = cli_engine()
    instance = engine.get(instance_id)
    activities = engine.activities(instance_id)
    if as_json:
        click.echo(instance_json(instance, activities))
        return
    console.print(f"[bold]{instance.id}[/bold]  {instance.workflow} v{instance.version}  run {instance.run}"
                  + ("  [magenta]shadow[/magenta]" if instance.shadow else ""))
    console.print(f"status [bold]{instance.status.value}[/bold] at node [bold]{instance.node}[/bold] "
                  f"(seq {instance.seq}, attempt {instance.attempt})")
    awaited = _awaited(engine, instance)
    if awaited:
        console.print(awaited, highlight=False)
    if instance.batch:
        console.print(f"gathering in batch {instance.batch} (`tradeflow batch {instance.batch}`)", highlight=False)
    if instance.error:
        console.print("[red]error[/red] ", end="")
        console.print(f"at {instance.error.get('node')} ({instance.error.get('service')}): "
                      f"{instance.error.get('reason')}", highlight=False, markup=False)
    if instance.result is not None:
        console.print(f"result {json.dumps(instance.result)}", highlight=False, markup=False)
    table = Table("seq", "node", "att", "outcome", "transition / detail", "ms", "worker")
    for act in activities:
        detail = act.get("transition") or act.get("control") or ""
        if act.get("signal"):
            detail = f"signal {act['signal']}" + (f" by {act['by']}" if act.get("by") else "")
            detail += f" ({act['quorum']})" if act.get("quorum") else ""
        elif act.get("control") and act.get("by"):
            detail += f" by {act['by']}"
        if act.get("batch"):
            detail = f"batch {act['batch']}: {detail}"
        if act.get("next"):
            detail += f" → {act['next']}"
            passed = act.get("via") or ()  # choices, and waits whose time had come
            detail += f" (via {', '.join(passed)})" if passed else ""
        if act.get("error") or act.get("reason"):
            detail += f" {act.get('error') or act.get('reason')}"
        ms = (act.get("ended_at", 0) - act.get("started_at", 0)) * 1000
        table.add_row(str(act.get("seq")), act.get("node", ""), str(act.get("attempt", "")), act["outcome"],
                      detail.strip(), f"{ms:.1f}", str(act.get("worker", "")))
    console.print(table)
    if instance.error:
        console.print(f"next: fix the cause, then `tradeflow retry {instance.id}`")


def _awaited(engine: Any, instance: Any) -> str:
    """What an awaiting instance waits for: its signals and its timeout (empty for other statuses)."""
    from datetime import UTC, datetime

    from engine.definitions.nodes import AwaitNode
    from engine.instance import InstanceStatus

    node = engine.definition(instance.workflow, instance.version).nodes.get(instance.node)
    if instance.status is not InstanceStatus.AWAITING or not isinstance(node, AwaitNode):
        return ""
    text = "awaiting signal " + " or ".join(node.signals)
    if instance.wake_at:
        text += (f"; at {datetime.fromtimestamp(instance.wake_at, UTC).isoformat(timespec='seconds')} "
                 f"without one it goes to {node.on_timeout}")
    return text + f"\nnext: tradeflow signal {instance.id} {next(iter(node.signals))} (as TRADEFLOW_PRINCIPAL)"


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[ID] NAME")
@click.option("--run", help="Signal every instance of RUN awaiting NAME (then give NAME only).")
@click.option("--node", help="With --run: only instances awaiting at this node.")
@click.option("--data", "data", help="JSON object written into the context under the await node's name, "
                                    "below the fields the engine owns: signal, by, roles, at, quorum (or @file).")
@click.option("--key", default=None, help="Idempotency key: a signal with a key already applied is a no-op.")
@no_by_option
@rerun(safe=True, why="with --key a signal already applied is a recorded no-op; without one, an instance that "
                      "moved on refuses it (look with `tradeflow inspect ID` before resending to an await loop)")
def signal(args: tuple[str, ...], run: str | None, node: str | None, data: str | None, key: str | None) -> None:
    """Send signal NAME to instance ID awaiting it, or with --run RUN to every instance awaiting it.

    The signal is sent as the CLI's identity: TRADEFLOW_PRINCIPAL (default: the OS user) with
    the roles in TRADEFLOW_PRINCIPAL_ROLES (a comma list; default none). An await node may allow
    a signal to some roles only, require fields of its data, or need several different people
    (a quorum); a refusal says why and is recorded.

    \b
        TRADEFLOW_PRINCIPAL=ann TRADEFLOW_PRINCIPAL_ROLES=pm \\
          tradeflow signal 3f2a9c approve --data '{"note": "ok"}' --key approve-ann
        tradeflow signal --run rebalance-2026-11-27 reject --node review --data '{"reason": "hold"}'
    """
    engine = cli_engine()
    by = cli_principal()
    payload = _json_arg(data) if data else None
    if payload is not None and not isinstance(payload, dict):
        raise click.BadParameter("--data must be a JSON object")
    if run:
        if len(args) != 1:
            raise click.UsageError("with --run, give the signal NAME only")
        result = engine.signal_run(run, args[0], payload, by=by, key=key, node=node)
        console.print(f"signal {args[0]} as {by}: {result.done} applied, {result.skipped} skipped "
                      "(not awaiting it, refused (see `tradeflow inspect ID`), moved on meanwhile, or key "
                      "already applied)", highlight=False)
        return
    if len(args) != 2:
        raise click.UsageError("give ID NAME (or --run RUN NAME)")
    if node:
        raise click.UsageError("--node goes with --run")
    iid, name = args
    try:
        result = engine.signal(iid, name, payload, by=by, key=key)
    except SignalRefused as exc:
        _fail(f"{exc}{refusal_hint(exc)}")
        return
    if result.duplicate:
        console.print(f"{iid}: signal {name} with key {key} was applied before; nothing done")
    elif result.counted and result.quorum:
        console.print(f"{iid}: signal {name} by {by.name} counted ({result.quorum[0]} of {result.quorum[1]}); "
                      f"it still awaits at {result.node}", highlight=False)
    else:
        console.print(f"{iid}: {result.status.value if result.status else '?'} at {result.node}")


def _operate(verb: str) -> Callable[..., None]:
    @click.argument("instance_ids", nargs=-1)
    @click.option("--run", help="Apply to every instance of this run (in bulk).")
    @click.option("--status", "statuses", multiple=True, help="With --run: only instances in this status.")
    @click.option("--reason", default="", help="Recorded in the activity history.")
    @rerun(safe=True, why=_STATE_CHANGE)
    def command(instance_ids: tuple[str, ...], run: str | None, statuses: tuple[str, ...], reason: str) -> None:
        engine = cli_engine()
        by = cli_principal()
        if run:
            result = engine.bulk(verb, run, statuses or None, reason=reason, by=by)
            console.print(f"{verb}: {result.done} done, {result.skipped} skipped (changed meanwhile)")
        if not instance_ids and not run:
            raise click.UsageError("name instance ids, or --run RUN [--status S]")
        for iid in instance_ids:
            instance = getattr(engine, verb)(iid, reason=reason, by=by)
            console.print(f"{iid}: {instance.status.value} at {instance.node}")

    command.__doc__ = {
        "pause": "Pause instances at their next step boundary (a step in flight finishes).",
        "resume": "Resume paused instances from their current node.",
        "cancel": "Cancel instances (a step in flight finishes; its result is ignored).",
        "retry": "Re-run the failed node of failed instances.",
    }[verb] + "\n\n    Recorded (history, audit log) as done by TRADEFLOW_PRINCIPAL (default: the OS user)."
    return command


for _verb in ("pause", "resume", "cancel"):
    main.command(_verb)(_operate(_verb))


@main.command()
@click.argument("instance_ids", nargs=-1)
@click.option("--run", help="Retry every failed instance of this run.")
@click.option("--context", "context_json", help="JSON object: context entries (node → data) to replace first.")
@click.option("--reason", default="")
@rerun(safe=True, why=_STATE_CHANGE)
def retry(instance_ids: tuple[str, ...], run: str | None, context_json: str | None, reason: str) -> None:
    """Re-run the failed node of failed instances, optionally with an edited context.

    Recorded (history, audit log) as done by TRADEFLOW_PRINCIPAL (default: the OS user).
    """
    engine = cli_engine()
    by = cli_principal()
    if run:
        result = engine.bulk("retry", run, ["failed"], reason=reason, by=by)
        console.print(f"retry: {result.done} done, {result.skipped} skipped")
    if not instance_ids and not run:
        raise click.UsageError("name instance ids, or --run RUN")
    for iid in instance_ids:
        instance = engine.retry(iid, context=_json_arg(context_json) or None, reason=reason, by=by)
        console.print(f"{iid}: {instance.status.value} at {instance.node}")


@main.command("list")
@click.option("--run", required=True, help="Run label.")
@click.option("--status", "statuses", multiple=True, help="Only these statuses.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array: one {id, workflow, version, status, node, seq, error} per instance.")
@read_only
def list_instances(run: str, statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Instances of a run."""
    engine = cli_engine()
    found = engine.list(run, statuses or None, limit=limit)
    if as_json:
        click.echo(json.dumps([{"id": i.id, "workflow": i.workflow, "version": i.version, "status": i.status.value,
                                "node": i.node, "seq": i.seq, "error": i.error, "batch": i.batch,
                                "shadow": i.shadow} for i in found]))
        return
    table = Table("id", "workflow", "status", "node", "error / awaiting")
    for inst in found:
        awaited = _awaited(engine, inst).split("\n")[0] if inst.status.value == "awaiting" else ""
        if inst.batch:
            awaited = f"batch {inst.batch}"
        table.add_row(inst.id, f"{inst.workflow} v{inst.version}" + (" shadow" if inst.shadow else ""),
                      inst.status.value, inst.node,
                      ((inst.error or {}).get("reason", "") or awaited)[:80])
    console.print(table)


@main.command()
@click.argument("args", nargs=-1, metavar="[RUN | diff A B]")
@click.option("--watch/--no-watch", default=True,
              help="With RUN: live progress until the run is done, or planned (the rest awaits signals).")
@click.option("--json", "as_json", is_flag=True,
              help="JSON instead of tables: an array of {run, total, <status>: count...}; with RUN, "
                   "that run's object once (no watching); with diff, the diff's document.")
@click.option("--key", default="data.account_id", show_default=True,
              help="diff: what pairs the instances of A and B (a path into each instance).")
@click.option("--path", "path", default="result", show_default=True,
              help="diff: the part compared (result, context, context.<node>, data...).")
@read_only
def runs(args: tuple[str, ...], watch: bool, as_json: bool, key: str, path: str) -> None:
    """Runs with their progress; with RUN, a live progress bar; `runs diff A B`: two runs compared
    instance by instance (paired by --key, compared at --path)."""
    engine = cli_engine()
    if args and args[0] == "diff" and len(args) == 3:
        from engine.runs_diff_cli import print_diff

        print_diff(engine.diff_runs(args[1], args[2], key=key, path=path), as_json, console)
        return
    if len(args) > 1:
        raise click.UsageError("give one RUN, or `diff A B`")
    run = args[0] if args else None
    if as_json:
        progresses = [engine.progress(label) for label in ([run] if run else engine.runs())]
        found = [{"run": p.run, "total": p.total, "finished": p.finished, "shadow": p.shadow,
                  **{s: p.counts.get(s, 0) for s in _STATUSES}} for p in progresses]
        click.echo(json.dumps(found[0] if run else found))
        return
    if run is None:
        table = Table("run", "phase", "total", "running", "waiting", "awaiting", "gathering", "paused", "succeeded",
                      "failed", "cancelled")
        for label in engine.runs():
            p = engine.progress(label)
            table.add_row(label + (" (shadow)" if p.shadow else ""), p.phase, str(p.total), *(str(p.counts[s]) for s in
                          ("running", "waiting", "awaiting", "gathering", "paused", "succeeded", "failed",
                           "cancelled")))
        console.print(table)
        return
    show_progress(engine, run, follow=watch, console=console)


main.add_command(batch_cli.batches)
main.add_command(batch_cli.batch)
main.add_command(limits_cli.limits)


#: Every status an instance can have, in ``runs --json``'s objects (a count each, 0 included).
_STATUSES = tuple(s.value for s in InstanceStatus)


# -- archive ----------------------------------------------------------------------------------


@main.group(cls=_Group)
def archive() -> None:
    """Keep finished instances beyond their TTL (gzipped JSON Lines)."""


@archive.command("write")
@click.option("--run", "runs_", multiple=True, help="Runs to archive (default: every run).")
@click.option("--to", "target", required=True, help="A directory, or s3://bucket/prefix (needs boto3).")
@rerun(safe=True, why="it writes the same finished instances again")
def archive_write(runs_: tuple[str, ...], target: str) -> None:
    """Write finished instances and their activities to TARGET."""
    engine = cli_engine()
    written = archive_runs(engine, list(runs_) or engine.runs(limit=10_000), target)
    for path, count in written:
        console.print(f"{path}: {count} instances")


@archive.command("show")
@click.argument("path")
@click.argument("instance_id")
@read_only
def archive_show(path: str, instance_id: str) -> None:
    """Print an archived instance (JSON) from the archive file or directory PATH."""
    found = read_archived(path, instance_id)
    if found is None:
        _fail(f"{instance_id} is not in {path}")
    click.echo(json.dumps(found, indent=2))


# -- local operation --------------------------------------------------------------------------


@main.group(cls=_Group)
def redis() -> None:
    """The embedded Redis (for machines without one)."""


@redis.command("start")
@rerun(safe=True, why="it starts the embedded Redis only when none runs")
def redis_start() -> None:
    """Start the embedded redis-server (AOF on) unless a Redis already answers."""
    click.echo(state_url(cli_settings(Settings), allow_start=True, notice=notice))


@redis.command("stop")
@rerun(safe=True, why="stopping a stopped Redis does nothing")
def redis_stop() -> None:
    """Stop the embedded redis-server."""
    click.echo("stopped" if stop_embedded(cli_settings(Settings).home) else "no embedded Redis was running")


@main.command()
@click.option("--fleet", "fleets", multiple=True, metavar="QUEUE[:POOL[:CONCURRENCY[:NICE]]]",
              help="A fleet to start (repeatable). Default: one solo process per core, each consuming every "
                   "service's queue, plus fillers; e.g. --fleet order_calc:prefork:2 --fleet "
                   "engine,portfolio_manager:threads:4 to split services apart. NICE (0-19) lowers its priority.")
@click.option("--processes", type=click.IntRange(min=1), default=None, metavar="N",
              help="How many combined solo processes to start (default: one per core).")
@click.option("--fillers", type=click.IntRange(min=0), default=None, metavar="M",
              help="How many more combined solo processes to start at a lower priority (nice 10), to use the "
                   "cores while the others wait on Redis (default: one per two processes, at least one; "
                   "0: none). See docs/workers.md.")
@click.option("--beat/--no-beat", default=True, help="Also run celery beat (timers, sweeper, schedules).")
@rerun(safe=True, why="it only starts worker processes")
def workers(fleets: tuple[str, ...], processes: int | None, fillers: int | None, beat: bool) -> None:
    """Run the worker fleets, plus beat, in the foreground (Ctrl-C stops all).

    With no --fleet: one combined solo process per core (--processes: how many), each consuming
    every service's queue (the layout the benchmarks measured cheapest in CPU per account), plus
    one per two of them at a lower priority that uses the cores while the others wait on Redis
    (--fillers: how many); --fleet options split them.

    A node or beat that exits is started again after a backoff (1 s, doubling to 60 s), logged
    on stderr; the others keep serving. Every node is pinned to the Redis and the data set
    resolved here: restarted on another data set, it refuses to start.
    """
    import logging

    from engine.app import make_store  # celery: imported by the commands that need it, not by --help

    if fleets and (processes is not None or fillers is not None):
        raise click.UsageError("--processes and --fillers size the default combined layout; with --fleet, repeat "
                               "a fleet as many times as the processes you want")
    try:
        specs = [FleetSpec.parse(f) for f in fleets] or combined_fleets(processes, fillers)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (QUEUE[:POOL[:CONCURRENCY[:NICE]]], e.g. order_calc:prefork:2)",
                                 param_hint="--fleet") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = cli_settings(Settings)
    # The workers use the same Redis (started if need be) and the data set found there now.
    url = state_url(settings, allow_start=True, notice=notice)
    store = make_store(settings, url)
    try:
        pinned = settings.with_redis(url).pinned_to(store.ensure_epoch())
    finally:
        store.close()
    with Fleet(specs, beat=beat, env=pinned.child_env(), beat_schedule=settings.home / "celerybeat-schedule") as fleet:
        console.print("started: " + ", ".join(str(s) for s in specs) + (" + beat" if beat else ""))
        fleet.wait()


@main.command()
@click.option("--count", default=3000, show_default=True, help="How many instances to start.")
@rerun(safe=True, why="the demo starts a new run of its own each time")
def demo(count: int) -> None:
    """Run the demo end to end: workers, a run with a live progress bar, a summary."""
    for hook in plugins.hooks("demo"):
        hook(count)
        return
    run_demo(count)


# -- plugins ----------------------------------------------------------------------------------


def _plugin_failed(name: str, exc: Exception) -> None:
    err_console.print(f"[yellow]warning:[/yellow] plugin {name} not loaded: {exc}")


def _load_plugins_only() -> dict[str, Any]:
    """Load the installed plugins (engine.plugins) and let them add their commands here."""
    return plugins.load(main, on_error=_plugin_failed)


def entry() -> None:
    """Console-script entry point: load plugins, then run."""
    _load_plugins_only()
    main()


if __name__ == "__main__":
    entry()
