"""The chaos soak: a morning run and its submissions while a controller breaks things at random.

    python -m tests.faults.chaos --seed 7 --duration 120 --accounts 2000    # make chaos
    python -m tests.faults.chaos --short                                   # make chaos-short (CI, < 60 s)
    python -m tests.faults.chaos --short --layout default                  # on what `tradeflow workers` starts

On a test-owned redis-server (AOF, fsync always) with a fleet per service (``engine`` threads,
``portfolio_manager`` threads, ``order_calc`` prefork, beat; or, ``--layout default``, the combined
``solo`` processes and the filler that ``tradeflow workers`` starts, and beat), it seeds a book, starts
the daily rebalance (``start_daily_rebalance``), approves every proposal as it comes
(``portfolio_manager.review.approve``: by two people where four-eyes asks for it; each
account's own instance then submits its orders), while a seeded controller, for
``duration`` seconds, picks one fault every 1-4 s: SIGKILL of a whole worker node (restarted
after 0-3 s), SIGKILL of an ``order_calc`` pool child, Redis ``kill -9`` and restart on the
same AOF, or SIGSTOP of a node for 1-4 s (its messages are delayed, then it resumes).

For every fault it also measures the **recovery**: the instances it affected are those with a
step started by a process it killed or stopped (the step's carrier; every started step for a
Redis kill), read just before the fault; its recovery time is how long until every one of them
moved again (its step applied, or it left ``running``). A recovery above ``RECOVERY_LIMIT``
(30 s) fails the soak; the summary gives the figures per kind of fault.

Then, with every node up again, the invariant checker asserts: every instance terminal;
exactly one applied transition per step; run counters consistent with the instances; the
rebalance failures are only the book's broken accounts; one brokerage order per approved
order. A step whose sweeper budget ran out while its fleet was down fails with ``Timeout``;
the soak retries those as an operator would (``tradeflow retry --run``) and counts them.
The summary is printed and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import redis

from engine import Principal
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.fleet import FleetSpec, combined_fleets
from engine.runtime.concerns.liveness import process_of
from engine.testing import store_of
from portfolio_manager.actions import build_services
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import definition_files, start_daily_rebalance
from portfolio_manager.generator import GeneratorConfig, seed_book
from portfolio_manager.review import approve, pending
from tests.faults.exactly_once import assert_exactly_once, submit_seq
from tests.faults.harness import REDIS_ERRORS, FaultLab, fault_lab
from tests.faults.invariants import check_invariants

T = TypeVar("T")
#: A fault's affected instances must all move again within this many seconds.
RECOVERY_LIMIT = 30.0
NODES = {"engine": FleetSpec("engine", "threads", 4), "portfolio_manager": FleetSpec("portfolio_manager", "threads", 8),
         "order_calc": FleetSpec("order_calc", "prefork", 2)}
FAULTS = ("kill_node", "kill_child", "restart_redis", "delay_node")


def layout_nodes(layout: str) -> dict[str, FleetSpec]:
    """The soak's nodes: ``services``, a fleet per service (threads and a prefork ``order_calc``, whose
    pool children can be killed); ``default``, what ``tradeflow workers`` starts with no options (combined
    ``solo`` processes and the filler: steps started by their delivery and run straight from it)."""
    if layout == "default":
        return {f"worker-{number}": spec for number, spec in enumerate(combined_fleets(), 1)}
    if layout == "services":
        return dict(NODES)
    raise ValueError(f"unknown layout {layout!r} (default or services)")


@dataclass
class Settings:
    """What one soak does."""

    seed: int = 1
    duration: float = 120.0
    accounts: int = 2000
    step_timeout: float = 30.0
    deadline: float = 600.0
    out: Path | None = None
    #: ``services`` (a fleet per service) or ``default`` (the layout ``tradeflow workers`` starts).
    layout: str = "services"


@dataclass
class Summary:
    """What happened: the faults, the instances and the orders."""

    seed: int
    accounts: int
    chaos_seconds: float
    faults: Counter[str] = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)
    rebalance: dict[str, int] = field(default_factory=dict)
    submissions: dict[str, int] = field(default_factory=dict)
    approved_orders: int = 0
    accepted_orders: int = 0
    brokerage_deliveries: int = 0
    applied: int = 0
    noops: int = 0
    sweeper_resends: int = 0
    liveness_resends: int = 0
    operator_retries: int = 0
    #: One per fault: {fault, at (s into the chaos), affected (instances), seconds (until all moved; None: never)}.
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    duration_seconds: float = 0.0
    passed: bool = False


def patiently(fn: Callable[..., T], *args: Any, seconds: float = 60.0, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried while the lab's Redis is down (it is restarted under our feet)."""
    end = time.monotonic() + seconds
    while True:
        try:
            return fn(*args, **kwargs)
        except REDIS_ERRORS:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


class Recoveries(threading.Thread):
    """Times each fault's recovery: until every instance it affected moved again (polled every 0.2 s)."""

    def __init__(self, lab: FaultLab, summary: Summary, began: float) -> None:
        super().__init__(name="chaos-recoveries", daemon=True)
        self.lab, self.summary, self.began = lab, summary, began
        self.lock = threading.Lock()
        self.open: list[tuple[dict[str, Any], float, dict[str, int]]] = []
        self.stopped = threading.Event()

    def affected(self, pids: set[int] | None) -> dict[str, int]:
        """Instance id -> seq of the started steps of processes ``pids`` (None: of every process)."""
        out = {}
        for step in patiently(store_of(self.lab.engine).started_steps, 100_000):
            process = process_of(step.carrier)
            if step.status is InstanceStatus.RUNNING and (
                    pids is None or (process is not None and int(process.rpartition(":")[2]) in pids)):
                out[step.id] = step.seq
        return out

    def watch(self, fault: str, affected: dict[str, int]) -> None:
        """The fault just happened to ``affected`` (read just before it): time until they all moved."""
        now = time.monotonic()
        record: dict[str, Any] = {"fault": fault, "at": round(now - self.began, 1), "affected": len(affected),
                                  "seconds": 0.0 if not affected else None}
        with self.lock:
            self.summary.recoveries.append(record)
            if affected:
                self.open.append((record, now, dict(affected)))

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.check()

    def check(self) -> None:
        """Close the records whose instances all moved."""
        with self.lock:
            watched = list(self.open)
        for record, at, left in watched:
            try:
                heads = store_of(self.lab.engine).step_heads(list(left))
            except REDIS_ERRORS:
                return
            for iid, seq in list(left.items()):
                head = heads.get(iid)
                if head is None or head.status is not InstanceStatus.RUNNING or head.seq > seq:
                    del left[iid]
            if not left:
                record["seconds"] = round(time.monotonic() - at, 1)
                with self.lock:
                    self.open.remove((record, at, left))

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.check()


class Controller(threading.Thread):
    """Injects one random fault every 1-4 s until stopped; every node is up again when it returns."""

    def __init__(self, lab: FaultLab, rng: random.Random, summary: Summary, duration: float) -> None:
        super().__init__(name="chaos", daemon=True)
        self.lab, self.rng, self.summary, self.duration = lab, rng, summary, duration
        self.names = sorted(lab.specs)
        pooled = [name for name in self.names if lab.specs[name].pool == "prefork"]
        #: The node whose pool children ``kill_child`` kills (none in a layout without a prefork pool).
        self.pooled = pooled[0] if pooled else None
        self.faults = FAULTS if self.pooled else tuple(f for f in FAULTS if f != "kill_child")
        self.stopped = threading.Event()
        self.began = time.monotonic()
        self.recoveries = Recoveries(lab, summary, self.began)

    def note(self, fault: str, what: str) -> None:
        self.summary.faults[fault] += 1
        self.summary.events.append(f"{time.monotonic() - self.began:6.1f}s {what}")

    def node_pids(self, node: str) -> set[int]:
        return {self.lab.node_pid(node), *self.lab.node_children(node)}

    def restart_exited(self) -> None:
        """Start again a node that exited (as ``tradeflow workers`` does): a pool child killed while its
        node was starting makes billiard give up ("Could not start worker processes")."""
        for name in self.names:
            fleet = self.lab.nodes.get(name)
            if fleet is not None and fleet.procs[0].poll() is not None:
                self.lab.nodes.pop(name).stop()
                self.lab.start_node(name)
                self.summary.events.append(f"{time.monotonic() - self.began:6.1f}s node {name} had exited: restarted")

    def run(self) -> None:
        self.recoveries.start()
        while not self.stopped.wait(self.rng.uniform(1, 4)) and time.monotonic() - self.began < self.duration:
            fault = self.rng.choice(self.faults)
            node = self.rng.choice(self.names)
            if fault == "kill_node":
                affected = self.recoveries.affected(self.node_pids(node))
                self.lab.kill_node(node)
                self.recoveries.watch(fault, affected)
                self.note(fault, f"SIGKILL node {node} ({len(affected)} started steps)")
                time.sleep(self.rng.uniform(0, 3))
                self.lab.start_node(node)
            elif fault == "kill_child":
                children = self.lab.node_children(self.pooled) if self.pooled else []
                if children:
                    child = self.rng.choice(children)
                    affected = self.recoveries.affected({child})
                    os.kill(child, signal.SIGKILL)
                    self.recoveries.watch(fault, affected)
                    self.note(fault, f"SIGKILL a {self.pooled} pool child ({len(affected)} started steps)")
            elif fault == "restart_redis":
                affected = self.recoveries.affected(None)
                self.lab.redis.restart()
                self.recoveries.watch(fault, affected)
                self.note(fault, f"Redis kill -9, restarted on its AOF ({len(affected)} started steps)")
            else:
                pause = self.rng.uniform(1, 4)
                pid = self.lab.node_pid(node)
                affected = self.recoveries.affected(self.node_pids(node))
                os.killpg(pid, signal.SIGSTOP)
                self.recoveries.watch(fault, affected)
                self.note(fault, f"SIGSTOP node {node} for {pause:.1f}s ({len(affected)} started steps)")
                time.sleep(pause)
                os.killpg(pid, signal.SIGCONT)
            self.restart_exited()
        self.restart_exited()
        self.summary.chaos_seconds = round(time.monotonic() - self.began, 1)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.recoveries.stop()


def recovery_figures(summary: Summary) -> dict[str, dict[str, Any]]:
    """Per kind of fault: how many, how many found steps in flight, instances affected, worst and median seconds."""
    out: dict[str, dict[str, Any]] = {}
    for fault in FAULTS:
        records = [r for r in summary.recoveries if r["fault"] == fault]
        timed = sorted(r["seconds"] for r in records if r["affected"] and r["seconds"] is not None)
        out[fault] = {"faults": len(records), "with_steps_in_flight": sum(1 for r in records if r["affected"]),
                      "affected": sum(r["affected"] for r in records),
                      "never": sum(1 for r in records if r["seconds"] is None),
                      "worst": timed[-1] if timed else None, "median": timed[len(timed) // 2] if timed else None}
    return out


def assert_recovered(summary: Summary) -> None:
    """Every fault's affected instances moved again, each fault's within RECOVERY_LIMIT seconds."""
    slow = [r for r in summary.recoveries if r["seconds"] is None or r["seconds"] > RECOVERY_LIMIT]
    assert not slow, f"recovery above {RECOVERY_LIMIT:g}s (None: never): {slow}"


def publish_short_timeouts(lab: FaultLab, step_timeout: float, four_eyes_over: float | None = None) -> None:
    """The production definitions, with every step's timeout at ``step_timeout``, at alias production.

    ``four_eyes_over``, when given, replaces the rebalances' four-eyes threshold (more proposals need two people).
    """
    for path in definition_files(PMSettings().definitions_dir):
        document = json.loads(path.read_text())
        if four_eyes_over is not None and "four_eyes_over" in document.get("parameters", {}):
            document["parameters"]["four_eyes_over"] = four_eyes_over
        for node in document["nodes"].values():
            if node["type"] in ("service", "http"):
                node["timeout_seconds"] = step_timeout
        version = lab.engine.publish(load_definition(json.dumps(document), str(path)))
        store_of(lab.engine).set_alias(document["name"], "production", version)


def _retry_timeouts(lab: FaultLab, run: str, summary: Summary) -> None:
    failed = [i for i in lab.engine.list(run, ["failed"]) if (i.error or {}).get("type") in ("Timeout", "WorkerLost")]
    for instance in failed:
        lab.engine.retry(instance.id, reason="chaos soak: re-run after the fleet came back")
    summary.operator_retries += len(failed)


def soak(settings: Settings, root: Path, summary: Summary | None = None) -> Summary:
    """Run one soak in ``root``, filling ``summary`` (a new one by default); raises AssertionError when an
    invariant breaks."""
    from portfolio_manager.cli import last_session

    rng = random.Random(settings.seed)
    summary = summary or Summary(settings.seed, settings.accounts, 0.0)
    began = time.monotonic()
    env = {"TRADEFLOW_SERVICE_MODULES": "portfolio_manager.actions,order_calc.actions",
           "TRADEFLOW_PM_PREFIX": "chaos:pm:", "TRADEFLOW_TIMER_INTERVAL": "1", "TRADEFLOW_SWEEP_INTERVAL": "2"}
    with fault_lab(root, layout_nodes(settings.layout), env=env) as lab:
        client = redis.Redis.from_url(lab.redis.url, socket_timeout=10, socket_connect_timeout=2)
        svc = build_services(PMSettings(redis_url=lab.redis.url, prefix="chaos:pm:"), client=client)
        run_date = last_session()
        seeded = seed_book(svc.book, settings.accounts, settings.seed, run_date, GeneratorConfig())
        publish_short_timeouts(lab, settings.step_timeout)
        run = f"chaos-{settings.seed}"
        controller = Controller(lab, rng, summary, settings.duration)
        controller.start()
        until = datetime.now(UTC) + timedelta(days=1)  # the review never closes during the soak
        # each approved account submits on its own (the per-account path, under faults); blocks: test_block_faults
        patiently(start_daily_rebalance, lab.engine, svc.book, run_date, run=run, review_until=until,
                  block_orders=False)
        end = time.monotonic() + settings.deadline
        while True:  # approve proposals as they come, as a desk would: their instances submit them
            assert time.monotonic() < end, f"not done after {settings.deadline}s\n{lab.logs()}"
            proposed = patiently(pending, lab.engine, svc.proposals, run)
            for who in ("chaos", "chaos2"):  # a four-eyes proposal gets its second approval from chaos2
                undecided = [p.account_id for p in proposed if not any(a["by"] == who for a in p.approvals)]
                if undecided:
                    patiently(approve, lab.engine, svc.proposals, run, undecided,
                              by=Principal(who, frozenset({"pm"})))
            rebalance = patiently(lab.engine.progress, run)
            chaos_over = not controller.is_alive()
            if chaos_over and rebalance.done and not proposed:
                if not rebalance.counts.get("failed"):
                    break
                before = summary.operator_retries
                _retry_timeouts(lab, run, summary)
                if summary.operator_retries == before:
                    break  # the failures left are the book's broken accounts (checked below)
            time.sleep(0.5)
        controller.stop()
        ids = store_of(lab.engine).run_ids(run)
        broken = set(seeded.missing_price_accounts)
        rebalance_figures = check_invariants(store_of(lab.engine), ids, run, expect=None)
        failed = {i.data["account_id"]: i.error for i in lab.engine.list(run, ["failed"])}
        assert set(failed) == broken, {a: e for a, e in failed.items() if a not in broken}
        accounts = svc.proposals.account_ids(run)
        seqs = {a: submit_seq(lab.engine, run, a) for a in accounts}
        summary.approved_orders = sum(len(p.orders) for p in svc.proposals.get_many(run, accounts))
        summary.accepted_orders, summary.brokerage_deliveries = assert_exactly_once(svc, run, accounts, seqs=seqs)
        summary.rebalance = dict(rebalance_figures.statuses)
        summary.submissions = dict(Counter((i.result or {}).get("outcome", "?")
                                           for i in store_of(lab.engine).load_many(ids) if i.status.is_terminal
                                           and (i.result or {}).get("outcome") in ("filled", "partly_rejected")))
        summary.applied += rebalance_figures.applied
        summary.noops += rebalance_figures.noops
        summary.sweeper_resends += rebalance_figures.sweeper_resends
        summary.liveness_resends += rebalance_figures.liveness_resends
        client.close()
        assert_recovered(summary)
    summary.duration_seconds = round(time.monotonic() - began, 1)
    summary.passed = True
    return summary


def render(summary: Summary) -> str:
    """The summary as a few lines of text."""
    faults = ", ".join(f"{n} {f}" for f, n in sorted(summary.faults.items())) or "none"
    return "\n".join([
        f"chaos soak seed {summary.seed}: {'PASSED' if summary.passed else 'FAILED'} in {summary.duration_seconds} s "
        f"({summary.chaos_seconds} s of chaos)",
        f"  faults:        {faults}",
        f"  rebalance:     {summary.accounts} accounts seeded -> {summary.rebalance}",
        f"  submissions:   {summary.submissions}",
        f"  orders:        {summary.approved_orders} approved, {summary.accepted_orders} accepted by the brokerage "
        f"({summary.brokerage_deliveries} deliveries)",
        f"  transitions:   {summary.applied} applied, {summary.noops} no-ops, {summary.sweeper_resends} sweeper "
        f"re-sends at a timeout, {summary.liveness_resends} re-sends of a lost worker's steps, "
        f"{summary.operator_retries} operator retries",
        f"  recovery:      until every instance a fault affected moved again (limit {RECOVERY_LIMIT:g} s)",
        *(f"    {fault:<14} {f['faults']} faults, {f['with_steps_in_flight']} with steps in flight, "
          f"{f['affected']} instances affected: worst {_secs(f['worst'])}, median {_secs(f['median'])}"
          + (f", {f['never']} never recovered" if f["never"] else "")
          for fault, f in recovery_figures(summary).items()),
    ])


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def main(argv: list[str] | None = None) -> int:
    """Command line: run one soak, print and write its summary; exit 1 when an invariant broke."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "1")))
    parser.add_argument("--duration", type=float, default=float(os.environ.get("CHAOS_DURATION", "120")),
                        help="seconds of chaos (default 120)")
    parser.add_argument("--accounts", type=int, default=int(os.environ.get("CHAOS_ACCOUNTS", "2000")))
    parser.add_argument("--short", action="store_true", help="the CI variant: 300 accounts, 20 s of chaos")
    parser.add_argument("--layout", choices=("services", "default"), default=os.environ.get("CHAOS_LAYOUT", "services"),
                        help="services: a fleet per service (threads, prefork order_calc); default: what "
                             "`tradeflow workers` starts (combined solo processes and the filler)")
    parser.add_argument("--out", type=Path, help="summary JSON (default chaos-<seed>.json in the lab directory)")
    args = parser.parse_args(argv)
    settings = Settings(args.seed, args.duration, args.accounts, out=args.out, layout=args.layout)
    if args.short:
        settings = Settings(args.seed, 20.0, 300, step_timeout=8.0, deadline=120.0, out=args.out, layout=args.layout)
    root = Path(tempfile.mkdtemp(prefix="tradeflow-chaos-"))
    out = settings.out or root / f"chaos-{settings.seed}.json"
    summary = Summary(settings.seed, settings.accounts, 0.0)
    try:
        soak(settings, root, summary)  # filled as it goes: printed below even when an invariant broke
        code = 0
    except AssertionError as exc:
        print(f"invariant broken: {exc}"[:6000], file=sys.stderr)
        code = 1
    out.write_text(json.dumps({**asdict(summary), "faults": dict(summary.faults),
                               "recovery": recovery_figures(summary),
                               "settings": {k: str(v) for k, v in asdict(settings).items()}}, indent=2))
    print(render(summary))
    print(f"  summary JSON:  {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
