"""The year soak: 250 trading mornings on a private Redis with real workers; Redis must end where it started.

Each morning (a trading day of the TSX from ``START``): the engine's clock (every process's offset
file, ``engine.clock.OffsetFileClock``) is put a quarter hour after that day's open, the platform's
daily run starts ``ACCOUNTS_PER_DAY`` accounts (``start_daily_rebalance``, as ``tradeflow pm run``
does), the portfolio managers approve every proposal (``portfolio_manager.review``; four-eyes
ones twice, by two people), the approved accounts trade in one block (the ``block`` gather
node's batch), and once the run is finished it is archived (``engine.ops.archive.archive_runs``,
what ``tradeflow archive write`` runs).

**Which clock expires keys.** Redis TTLs run on Redis's own clock, not on the engine's offset
clock: a business day passes in a second, a retention of 14 days would never pass. The soak
therefore sets the retention in seconds (``TRADEFLOW_RETENTION_DAYS`` = ``RETENTION_SECONDS`` /
86400, read by the workers, the proposals and the simulated brokerage alike): each morning's
keys expire ``RETENTION_SECONDS`` of real time after it finished, while the offset clock moves
the business days. The retention is longer than a morning takes, so nothing expires under a
morning still running, and shorter than a few mornings, so a year's keys cannot pile up unseen.

The baseline is read after one warm-up morning whose keys expired (first-use keys stay for good
and are bounded: the data set's epoch, the two step-metric hashes, Celery's queue bindings);
the end is read once the last morning's keys expired and the sweeper's housekeeping (at most once
a minute) trimmed the indexes. Pass: key count and the keys' own memory (``MEMORY USAGE`` of
every key, summed) within ``TOLERANCE`` of the baseline, every morning's instances all succeeded
and each archived exactly once. Redis's ``used_memory`` is printed beside it, not judged: it also
counts the clients' buffers (the workers' connection pools grow over the year: about +0.1 MB
here) and the allocator's own overhead after the peak, which are not what the year left behind.

Run: ``python -m tests.faults.year_soak [--days 250] [--accounts 20]`` (``make soak``), or the test
``tests/faults/test_year_soak.py`` (marked ``slow``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from engine.ops.archive import archive_runs
from engine.ops.fleet import FleetSpec
from engine.principal import Principal
from engine.testing import store_of
from portfolio_manager import review
from portfolio_manager.calendars import market_open, trading_days
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import ensure_definitions, start_daily_rebalance
from portfolio_manager.generator import GeneratorConfig, seed_book
from portfolio_manager.services import build_services
from tests.faults.harness import FaultLab, fault_lab

START = date(2027, 1, 4)
DAYS = 250
ACCOUNTS_PER_DAY = 20
BOOK_ACCOUNTS = 400
RETENTION_SECONDS = 15
TOLERANCE = 0.03
#: The sweeper's housekeeping runs at most once a minute: the end waits for a pass after the expiry.
SETTLE_SECONDS = 150.0


@dataclass
class Figures:
    """What the soak measured."""

    baseline_keys: int = 0
    baseline_memory: int = 0
    end_keys: int = 0
    end_memory: int = 0
    baseline_data: int = 0
    end_data: int = 0
    peak_keys: int = 0
    peak_memory: int = 0
    days: int = 0
    instances: int = 0
    archived: int = 0
    archived_twice: int = 0
    seconds: float = 0.0
    samples: list[tuple[int, str, int, int]] = field(default_factory=list)

    @property
    def key_drift(self) -> float:
        return (self.end_keys - self.baseline_keys) / self.baseline_keys

    @property
    def memory_drift(self) -> float:
        return (self.end_memory - self.baseline_memory) / self.baseline_memory

    @property
    def data_drift(self) -> float:
        return (self.end_data - self.baseline_data) / self.baseline_data

    def line(self) -> str:
        return (f"{self.days} mornings, {self.instances} instances ({self.archived} archived, "
                f"{self.archived_twice} twice) in {self.seconds:.0f}s; keys {self.baseline_keys} -> "
                f"{self.end_keys} ({self.key_drift:+.1%}, peak {self.peak_keys}); the keys' memory "
                f"{self.baseline_data / 1e6:.3f} MB -> {self.end_data / 1e6:.3f} MB ({self.data_drift:+.1%}); "
                f"used memory "
                f"{self.baseline_memory / 1e6:.2f} MB -> {self.end_memory / 1e6:.2f} MB "
                f"({self.memory_drift:+.1%}, peak {self.peak_memory / 1e6:.2f} MB)")


def nodes() -> dict[str, FleetSpec]:
    """The engine queue, the portfolio manager (threads, as in production) and the order calculation."""
    return {"engine": FleetSpec("engine", "threads", 2), "portfolio_manager": FleetSpec("portfolio_manager",
                                                                                         "threads", 4),
            "order_calc": FleetSpec("order_calc", "prefork", 1)}


#: The two portfolio managers who approve (four-eyes needs both for the large proposals).
ANN, BOB = Principal("ann", frozenset({"pm"})), Principal("bob", frozenset({"pm"}))


def usage(lab: FaultLab) -> tuple[int, int]:
    """(keys, used memory in bytes) of the lab's Redis."""
    return int(lab.client.dbsize()), int(lab.client.info("memory")["used_memory"])


def key_sizes(lab: FaultLab) -> dict[str, int]:
    """Every key of the lab's Redis with its ``MEMORY USAGE`` (bytes)."""
    return {key.decode(): int(lab.client.memory_usage(key, samples=0) or 0) for key in lab.client.scan_iter(count=1000)}


def grown(before: dict[str, int], after: dict[str, int], most: int = 8) -> str:
    """The keys that hold the most more bytes than at the baseline (new keys included)."""
    growth = sorted(((after[k] - before.get(k, 0), k) for k in after), reverse=True)[:most]
    return ", ".join(f"{key} +{delta} B" for delta, key in growth if delta > 0) or "none"


def memory_parts(lab: FaultLab) -> str:
    """Where the used memory is (``MEMORY STATS``): the keys' data, the clients' buffers, scripts, the rest."""
    stats = lab.client.memory_stats()
    parts = {"dataset": stats.get("dataset.bytes", 0), "clients": stats.get("clients.normal", 0),
             "scripts": stats.get("lua.caches", 0) + stats.get("functions.caches", 0),
             "startup": stats.get("startup.allocated", 0)}
    return ", ".join(f"{name} {value / 1e6:.2f} MB" for name, value in parts.items())


def set_clock(lab: FaultLab, at: float) -> None:
    """Put every process of the lab at epoch second ``at`` (each re-reads the file within a second)."""
    lab.clock_file.write_text(repr(at - time.time()))


def morning(lab: FaultLab, svc: Any, day: date, archive: Path, label: str) -> int:
    """One trading morning, start to archive; how many instances it ran."""
    # Each process re-reads the offset within a second; until then it is a morning behind, which is
    # harmless here: the clock only moves forward, and nothing of a morning is due before its cut-off.
    set_clock(lab, market_open(day, "XTSE").timestamp() + 900)
    run = f"{label}-{day.isoformat()}"
    started = start_daily_rebalance(lab.engine, svc.book, day, run=run, regions=["CA"], wait_for_open=False,
                                    limit=ACCOUNTS_PER_DAY)
    assert started.total == ACCOUNTS_PER_DAY, started
    lab.wait_until(lambda: lab.engine.progress(run).settled, 120, lambda: f"{run} planned: "
                   f"{lab.engine.progress(run).counts}")
    proposals = review.pending(lab.engine, svc.proposals, run)
    accounts = [p.account_id for p in proposals]
    if accounts:
        review.approve(lab.engine, svc.proposals, run, accounts, by=ANN)
        second = [p.account_id for p in proposals if p.approvals_required > 1]
        if second:
            review.approve(lab.engine, svc.proposals, run, second, by=BOB)
    lab.wait_until(lambda: lab.engine.progress(run).done, 120, lambda: f"{run} finished: "
                   f"{lab.engine.progress(run).counts}")
    progress = lab.engine.progress(run)
    assert progress.counts.get("succeeded", 0) == progress.total, (run, progress.counts)
    written = archive_runs(lab.engine, [run], str(archive))
    assert sum(count for _path, count in written) == progress.total, (run, written)
    return progress.total


def archived_ids(archive: Path) -> Counter[str]:
    """How often each instance id appears across every archive file."""
    seen: Counter[str] = Counter()
    for file in sorted(archive.glob("*.jsonl.gz")):
        with gzip.open(file, "rt", encoding="utf-8") as lines:
            for line in lines:
                seen[json.loads(line)["instance"]["id"]] += 1
    return seen


def wait_settled(lab: FaultLab, keys_target: int, data_target: int) -> tuple[int, int]:
    """Wait (at most SETTLE_SECONDS: the last keys' TTLs, then a housekeeping pass, once a minute) until
    the key count and the keys' memory are within a third of the tolerance of the targets; the usage then."""
    end = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < end:
        keys, data = usage(lab)[0], sum(key_sizes(lab).values())
        if keys <= keys_target * (1 + TOLERANCE / 3) and data <= data_target * (1 + TOLERANCE / 3):
            break
        time.sleep(2)
    time.sleep(2)
    return usage(lab)


def run_soak(root: Path, days: int = DAYS, report: Any = print) -> Figures:
    """The soak on a Redis and workers of its own under ``root``; returns its figures."""
    pm_prefix = f"tflab-pm-{uuid.uuid4().hex[:6]}:"
    env = {"TRADEFLOW_SERVICE_MODULES": "portfolio_manager.actions,order_calc.actions",
           "TRADEFLOW_PM_PREFIX": pm_prefix, "TRADEFLOW_RETENTION_DAYS": repr(RETENTION_SECONDS / 86400),
           "TRADEFLOW_TIMER_INTERVAL": "0.25"}
    calendar = trading_days(START, START + timedelta(days=400), "XTSE")
    assert len(calendar) > days, f"only {len(calendar)} trading days from {START}"
    figures = Figures()
    archive = root / "archive"
    with fault_lab(root, nodes(), env=env) as lab:
        store_of(lab.engine).retention_seconds = RETENTION_SECONDS  # the soak's own process, as the workers
        settings = PMSettings(redis_url=lab.redis.url, prefix=pm_prefix, retention_days=RETENTION_SECONDS / 86400)
        svc = build_services(settings, client=lab.client)
        seed_book(svc.book, BOOK_ACCOUNTS, 11, START, GeneratorConfig(broken_share=0.0))
        ensure_definitions(lab.engine, settings.definitions_dir)
        warm = morning(lab, svc, calendar[0], root / "warm-up", "warm-up")
        report(f"warm-up morning: {warm} instances; waiting for its keys to expire")
        time.sleep(RETENTION_SECONDS + 2)
        lab.wait_until(lambda: lab.engine.runs(limit=10) == [], SETTLE_SECONDS, "the warm-up run trimmed")
        figures.baseline_keys, figures.baseline_memory = usage(lab)
        report(f"baseline: {figures.baseline_keys} keys, {figures.baseline_memory / 1e6:.2f} MB used "
               f"({memory_parts(lab)})")
        baseline_sizes = key_sizes(lab)
        figures.baseline_data = sum(baseline_sizes.values())
        began = time.monotonic()
        for n, day in enumerate(calendar[1:days + 1], start=1):
            figures.instances += morning(lab, svc, day, archive, "day")
            figures.days = n
            keys, memory = usage(lab)
            figures.peak_keys, figures.peak_memory = max(figures.peak_keys, keys), max(figures.peak_memory, memory)
            if n % 50 == 0 or n == days or n <= 2:
                figures.samples.append((n, day.isoformat(), keys, memory))
                report(f"day {n:3d} {day}: {keys} keys, {memory / 1e6:.2f} MB used, "
                       f"{time.monotonic() - began:.0f}s")
        figures.seconds = time.monotonic() - began
        report(f"{days} mornings done; waiting for the last ones' keys to expire and the indexes to be trimmed")
        figures.end_keys, figures.end_memory = wait_settled(lab, figures.baseline_keys, figures.baseline_data)
        report(f"end: {figures.end_keys} keys, {figures.end_memory / 1e6:.2f} MB used ({memory_parts(lab)})")
        end_sizes = key_sizes(lab)
        figures.end_data = sum(end_sizes.values())
        report(f"grown since the baseline: {grown(baseline_sizes, end_sizes)}")
        seen = archived_ids(archive)
        figures.archived = len(seen)
        figures.archived_twice = sum(1 for count in seen.values() if count > 1)
    report(figures.line())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=DAYS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tradeflow-soak-") as tmp:
        figures = run_soak(Path(tmp), args.days)
    ok = (figures.archived == figures.instances and figures.archived_twice == 0
          and abs(figures.key_drift) <= TOLERANCE and abs(figures.data_drift) <= TOLERANCE)
    print("PASS" if ok else "FAIL")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
