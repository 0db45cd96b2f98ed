"""The daily run: one rebalance instance per active account, the workflow chosen by region.

    engine = build_engine(Settings.from_env())   # at an edge: the CLI, a worker's bootstrap
    started = start_daily_rebalance(engine, book, date(2026, 11, 24))
    engine.wait_for_run(started.run)

- One **run** per trading day (``rebalance-<date>``) holds every account of both regions,
  so ``engine.progress(run)`` and ``tradeflow runs <run>`` follow the whole morning.
- The workflow is ``rebalance-ca`` (TSX calendar) or ``rebalance-us`` (NYSE calendar) at the
  alias ``production``; a region whose exchange has no session that day is skipped.
- Instance ids are ``<run>-<account>``: starting the same run again (beat firing twice, an
  operator re-running it) starts only the accounts not yet started.
- :func:`enqueue_accounts` starts any list of accounts on demand (e.g. after a fix).

Beat triggers the run through :class:`TradingDaySchedule`: once per trading day of each
exchange, at a local wall time in the exchange's own time zone (``morning_schedule``), and
the Celery task :func:`daily_rebalance_task` does what ``tradeflow pm run`` does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from celery import shared_task
from celery.schedules import schedstate, schedule

from engine.api import Engine, StartItem
from engine.app import build_engine
from engine.definitions.nodes import AwaitNode
from engine.definitions.validation import Roles, load_definition
from engine.errors import NotFound
from engine.roles import declared_roles
from portfolio_manager.book import Account, Region
from portfolio_manager.config import PMSettings
from portfolio_manager.errors import AccountNotFound, InvalidBookData
from portfolio_manager.services import configured, services
from portfolio_manager.sources import BookReader

log = logging.getLogger(__name__)

WORKFLOWS: dict[Region, str] = {Region.CA: "rebalance-ca", Region.US: "rebalance-us"}
EXCHANGE_ZONES: dict[str, str] = {"XTSE": "America/Toronto", "XNYS": "America/New_York"}
DEFAULT_ALIAS = "production"
DEPOSIT_WORKFLOW = "invest-deposit"
#: The await node of the rebalances where the portfolio managers decide.
REVIEW_NODE = "review"


@dataclass
class RunStarted:
    """What a (daily or on-demand) start did."""

    run: str
    run_date: date
    started: dict[str, int] = field(default_factory=dict)
    already_started: int = 0
    skipped_regions: dict[str, str] = field(default_factory=dict)
    unknown_accounts: list[str] = field(default_factory=list)
    invalid_accounts: dict[str, str] = field(default_factory=dict)
    instance_ids: list[str] = field(default_factory=list)
    #: When the run should be done by (see :func:`default_deadline`); None when nothing started.
    deadline: datetime | None = None
    #: When the review of the run's proposals closes, per workflow started (its ``review`` node's timeout).
    review_closes: dict[str, datetime] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Instances started now."""
        return sum(self.started.values())

    def review_closed(self, now: datetime) -> dict[str, datetime]:
        """The workflows whose review already closed at ``now``: their proposals expire as soon as recorded."""
        return {w: at for w, at in self.review_closes.items() if at <= now}


#: The default deadline of a run: this long before the earliest close of its exchanges.
DEADLINE_MARGIN = timedelta(minutes=30)


def default_deadline(run_date: date, regions: Iterable[Region | str], margin: timedelta = DEADLINE_MARGIN
                     ) -> datetime | None:
    """The earliest close of the ``regions``' exchanges on ``run_date``, minus ``margin`` (None: no region)."""
    from portfolio_manager.calendars import exchange_for, market_close

    closes = [market_close(run_date, exchange_for(Region(r))) for r in regions]
    return min(closes) - margin if closes else None


def daily_run_label(run_date: date) -> str:
    """The run of the morning rebalance of ``run_date``."""
    return f"rebalance-{run_date.isoformat()}"


def instance_id_for(run: str, account_id: str) -> str:
    """The instance of ``account_id`` in ``run`` (deterministic: starting twice is harmless)."""
    return f"{run}-{account_id}"


def today_in(exchange: str = "XTSE") -> date:
    """Today's date where ``exchange`` trades."""
    return datetime.now(ZoneInfo(EXCHANGE_ZONES.get(exchange, "America/Toronto"))).date()


# --------------------------------------------------------------------------- definitions


def definition_files(directory: Path) -> list[Path]:
    """The workflow files of ``directory`` (``schema.json`` is the format's schema, not a workflow)."""
    files = sorted(p for p in directory.glob("*.json") if p.name != "schema.json")
    if not files:
        raise FileNotFoundError(f"no workflow definitions in {directory}; set TRADEFLOW_DEFINITIONS_DIR")
    return files


def ensure_definitions(engine: Engine, directory: Path, alias: str = DEFAULT_ALIAS, *, roles: Roles = None,
                       settings: PMSettings | None = None) -> dict[str, int]:
    """Publish every definition of ``directory`` (same content: same version) and point ``alias``
    at it only where the definition has no such alias yet, so an operator's choice stands.

    ``roles``: the role set the definitions may name (see :func:`engine.definitions.validation.load_definition`;
    the callers at the edges pass :func:`engine.roles.declared_roles` of their settings). ``settings``: the
    portfolio manager's, read at the edge; their ``broker_rate`` sets the brokerage limit
    (:func:`apply_broker_rate`)."""
    versions: dict[str, int] = {}
    for path in definition_files(directory):
        definition = load_definition(path.read_text(), str(path), roles=roles)
        versions[definition.name] = engine.ensure_alias(definition.name, alias, engine.publish(definition))
    if settings is not None:
        apply_broker_rate(engine, settings)
    return versions


#: The rate limit the definitions' brokerage steps name (``limits.rate.key``): the ``submit``
#: nodes' and the ``block`` gather nodes' batch step.
BROKERAGE_LIMIT = "brokerage"


def apply_broker_rate(engine: Engine, settings: PMSettings) -> None:
    """Set the ``brokerage`` limit to ``TRADEFLOW_PM_BROKER_RATE`` (orders a second), when it is set
    and differs from the override in force (each change is one audit record, not one per start)."""
    if settings.broker_rate is None:
        return
    now = {s.name: s for s in engine.limits()}.get(BROKERAGE_LIMIT)
    if now is None or not now.override or now.per_second != settings.broker_rate:
        engine.set_limit(BROKERAGE_LIMIT, per_second=settings.broker_rate, by="TRADEFLOW_PM_BROKER_RATE")


# --------------------------------------------------------------------------- starting


def _start(engine: Engine, result: RunStarted, by_workflow: dict[str, list[StartItem]], version: int | str,
           shadow: bool = False) -> None:
    for workflow, items in by_workflow.items():
        if not items:
            continue
        # No look-up first: the create skips an id that exists, in the same call, and says so.
        created = engine.start_many(workflow, items, version=version, run=result.run, shadow=shadow,
                                    created_only=True)
        result.instance_ids += created
        result.already_started += len(items) - len(created)
        result.started[workflow] = len(created)


def _item(run: str, account: Account, run_date: date, wait_for_open: bool,
          review_until: datetime | None = None, block_orders: bool = True,
          block_until: datetime | None = None) -> StartItem:
    data: dict[str, Any] = {"account_id": account.id, "run_date": run_date.isoformat()}
    if not wait_for_open:
        data["wait_for_open"] = False
    if not block_orders:
        data["block_orders"] = False
    if block_until is not None:
        if block_until.tzinfo is None:
            raise ValueError("block_until needs a time zone (e.g. datetime.now(UTC) + timedelta(minutes=5))")
        data["block_until"] = block_until.isoformat()
    if review_until is not None:
        if review_until.tzinfo is None:
            raise ValueError("review_until needs a time zone (e.g. datetime.now(UTC) + timedelta(hours=2))")
        data["review_until"] = review_until.isoformat()
    return StartItem(data, instance_id_for(run, account.id))


def start_daily_rebalance(engine: Engine, book: BookReader, run_date: date | None = None, *,
                          run: str | None = None, regions: Iterable[Region | str] | None = None,
                          wait_for_open: bool = True, version: int | str = DEFAULT_ALIAS,
                          limit: int | None = None, review_until: datetime | None = None,
                          block_orders: bool = True, block_until: datetime | None = None,
                          deadline: datetime | None = None, deadline_margin: timedelta = DEADLINE_MARGIN,
                          shadow: bool = False) -> RunStarted:
    """Start one instance per active account whose exchange trades on ``run_date`` (default: today).

    Regions whose exchange is closed that day are skipped (and named in the result).
    ``wait_for_open=False`` starts at once instead of at the open; ``limit`` caps the count.
    ``review_until`` replaces the review's cut-off (the close minus ``review_cutoff``): a longer
    window, or rehearsals of a past session (the demo, tests); the beat's morning run never sets
    it. ``review_closes`` of the result says when each workflow's review closes: a run started
    after that (``review_closed``) has proposals that expire as soon as they are recorded.
    Approved accounts trade in blocks (``block``, closing at the cut-off or ``block_until``, or
    once the run is decided); ``block_orders=False`` submits each account's orders on approval.
    The run gets a deadline (shown by the console): ``deadline``, else the earliest close of
    the started regions' exchanges minus ``deadline_margin``. ``shadow=True`` starts shadow
    instances (see :mod:`portfolio_manager.shadow`: ``tradeflow pm shadow``).
    """
    from portfolio_manager.calendars import exchange_for, is_trading_day, next_trading_day  # pandas: slow to import

    run_date = run_date or today_in()
    result = RunStarted(run or daily_run_label(run_date), run_date)
    wanted = {Region(r) for r in regions} if regions else set(Region)
    open_regions: set[Region] = set()
    for region in sorted(wanted):
        exchange = exchange_for(region)
        if is_trading_day(run_date, exchange):
            open_regions.add(region)
        else:
            result.skipped_regions[region.value] = (
                f"{exchange} has no session on {run_date} (next: {next_trading_day(run_date, exchange)})")
    by_workflow: dict[str, list[StartItem]] = {WORKFLOWS[r]: [] for r in sorted(open_regions)}
    for account in book.list_accounts(active_only=True, invalid=result.invalid_accounts):
        if account.region in open_regions:
            by_workflow[WORKFLOWS[account.region]].append(
                _item(result.run, account, run_date, wait_for_open, review_until, block_orders, block_until))
    for account_id, reason in result.invalid_accounts.items():  # one bad record never stops the morning
        log.error("daily run %s: account %s not started: %s", result.run, account_id, reason)
    if limit is not None:
        by_workflow = _cap(by_workflow, limit)
    _start(engine, result, by_workflow, version, shadow)
    _review_closes(engine, result, by_workflow, version)
    if result.total or result.already_started:
        result.deadline = deadline or default_deadline(run_date, open_regions, deadline_margin)
        if result.deadline is not None:
            engine.set_run_deadline(result.run, result.deadline.timestamp())
    log.info("daily run %s: started %s, already started %d, skipped %s", result.run, result.started,
             result.already_started, result.skipped_regions)
    return result


def review_cutoff(engine: Engine, workflow: str, version: int | str, data: dict[str, Any]) -> datetime | None:
    """When the review of an instance of ``workflow`` started with ``data`` closes (None: no timed review).

    The ``review`` await node's own ``timeout`` expression, evaluated as the instance will
    evaluate it (the exchange's close minus ``review_cutoff``, or ``data.review_until``).
    """
    from engine.expressions.cel import Scope, compile_expression
    from portfolio_manager.expressions import register_expression_functions  # market_close(): pandas

    register_expression_functions()
    definition = engine.definition(workflow, version)
    node = definition.nodes.get(REVIEW_NODE)
    if not isinstance(node, AwaitNode) or node.timeout is None:
        return None
    value = compile_expression(node.timeout).evaluate_raw(Scope(data=data, params=definition.parameters))
    return value if isinstance(value, datetime) else None


def _review_closes(engine: Engine, result: RunStarted, by_workflow: dict[str, list[StartItem]],
                   version: int | str) -> None:
    for workflow, items in by_workflow.items():
        if items:
            closes = review_cutoff(engine, workflow, version, dict(items[0].data))
            if closes is not None:
                result.review_closes[workflow] = closes


def _cap(by_workflow: dict[str, list[StartItem]], limit: int) -> dict[str, list[StartItem]]:
    out: dict[str, list[StartItem]] = {}
    left = limit
    for workflow, items in by_workflow.items():
        out[workflow] = items[:max(left, 0)]
        left -= len(out[workflow])
    return out


def enqueue_accounts(engine: Engine, book: BookReader, account_ids: Sequence[str], run_date: date, *,
                     run: str | None = None, wait_for_open: bool = False,
                     version: int | str = DEFAULT_ALIAS, review_until: datetime | None = None) -> RunStarted:
    """Start the rebalance of ``account_ids`` now (on demand), each with its region's workflow.

    Accounts traded on demand submit their own orders on approval (no block: ``block_orders``
    false in their data).

    Unknown accounts are listed in the result, not started; closed ones are started and end
    ``failed`` with the reason, so the request leaves a trace.
    """
    result = RunStarted(run or f"adhoc-{daily_run_label(run_date)}", run_date)
    by_workflow: dict[str, list[StartItem]] = {}
    for account_id in dict.fromkeys(account_ids):
        try:
            account = book.get_account(account_id)
        except AccountNotFound:
            result.unknown_accounts.append(account_id)
            continue
        except InvalidBookData as exc:
            result.invalid_accounts[account_id] = str(exc)
            continue
        by_workflow.setdefault(WORKFLOWS[account.region], []).append(
            _item(result.run, account, run_date, wait_for_open, review_until, block_orders=False))
    _start(engine, result, by_workflow, version)
    return result


# --------------------------------------------------------------------------- beat


class TradingDaySchedule(schedule):
    """Due once per trading day of ``exchange``, at local wall time ``at`` in the exchange's zone.

    Weekends and the exchange's holidays (``exchange_calendars``) are skipped; daylight
    saving time is handled by the zone. A beat that was down at the time fires on start-up
    for the day it missed, once.
    """

    def __init__(self, exchange: str, at: str = "09:00", zone: str | None = None, nowfun: Any = None,
                 app: Any = None) -> None:
        self.exchange = exchange
        self.at = at
        self.zone = zone or EXCHANGE_ZONES.get(exchange, "America/Toronto")
        self._wall = time.fromisoformat(at)
        super().__init__(run_every=timedelta(days=1), nowfun=nowfun, app=app)

    def __repr__(self) -> str:
        return f"<trading days of {self.exchange} at {self.at} {self.zone}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.exchange, self.at, self.zone))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TradingDaySchedule):
            return (self.exchange, self.at, self.zone) == (other.exchange, other.at, other.zone)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.exchange, self.at, self.zone))

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after ``moment`` (tz-aware)."""
        from portfolio_manager.calendars import is_trading_day  # pandas: slow to import

        zone = ZoneInfo(self.zone)
        day = moment.astimezone(zone).date()
        for offset in range(0, 31):
            candidate = day + timedelta(days=offset)
            fire = datetime.combine(candidate, self._wall, tzinfo=zone)
            if fire > moment and is_trading_day(candidate, self.exchange):
                return fire.astimezone(UTC)
        raise RuntimeError(f"{self.exchange}: no trading day in the 30 days after {moment:%Y-%m-%d}")

    def _aware(self, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time left until the next firing after ``last_run_at``."""
        return self.next_after(self._aware(last_run_at)) - self._aware(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Due when a firing passed since ``last_run_at``; beat checks again at most an hour later."""
        now = self._aware(self.now())
        upcoming = self.next_after(self._aware(last_run_at))
        if upcoming <= now:
            following = (self.next_after(now) - now).total_seconds()
            return schedstate(True, max(1.0, min(following, 3600.0)))
        return schedstate(False, max(1.0, min((upcoming - now).total_seconds(), 3600.0)))


def morning_schedule(at: str = "09:00") -> dict[str, dict[str, Any]]:
    """The beat entries of the morning rebalance: one per exchange, in its own time zone."""
    return {
        f"morning-rebalance-{exchange}": {
            "task": DAILY_TASK,
            "schedule": TradingDaySchedule(exchange, at),
            "args": (exchange,),
            "options": {"queue": "portfolio_manager"},
        }
        for exchange in EXCHANGE_ZONES
    }


DAILY_TASK = "portfolio_manager.daily_rebalance"
_engine_lock = threading.Lock()
_engine: dict[str, Engine] = {}


def _worker_engine() -> Engine:
    with _engine_lock:
        if "engine" not in _engine:
            _engine["engine"] = build_engine(configured()[1])
        return _engine["engine"]


@shared_task(name=DAILY_TASK, ignore_result=True)
def daily_rebalance_task(exchange: str | None = None, run_date: str | None = None) -> dict[str, Any]:
    """Beat's entry point: the morning run of the regions ``exchange`` serves (all when None)."""
    from portfolio_manager.calendars import EXCHANGES  # pandas: slow to import

    engine = _worker_engine()
    settings, engine_settings = configured()  # read by the worker's bootstrap (the plugin's worker hook)
    ensure_definitions(engine, settings.definitions_dir, roles=lambda: declared_roles(engine_settings),
                       settings=settings)
    regions = [r for r, x in EXCHANGES.items() if exchange is None or x == exchange]
    day = date.fromisoformat(run_date) if run_date else today_in(exchange or "XTSE")
    try:
        started = start_daily_rebalance(engine, services().book, day, regions=regions)
    except NotFound as exc:
        log.error("daily run of %s not started: %s", day, exc)
        raise
    return {"run": started.run, "started": started.started, "skipped": started.skipped_regions}


__all__ = [
    "DAILY_TASK",
    "REVIEW_NODE",
    "RunStarted",
    "TradingDaySchedule",
    "WORKFLOWS",
    "daily_rebalance_task",
    "daily_run_label",
    "definition_files",
    "enqueue_accounts",
    "ensure_definitions",
    "instance_id_for",
    "morning_schedule",
    "review_cutoff",
    "start_daily_rebalance",
    "today_in",
]
