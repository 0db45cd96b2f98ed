"""Shadows of the morning: a version tried on today's book beside production, never touching it.

``tradeflow pm shadow --version canary`` starts a shadow of the morning rebalance
(:func:`start_shadow`): one shadow instance per active account (``Engine.start_many(...,
shadow=True)``), in a run of its own (``shadow-<date>-<version>``), with another version or alias
of the rebalance definitions -- or a definition file not yet published: validated, published, and
pointed at by the shadow-only alias ``shadow`` (never ``production``). Each instance runs the
morning up to its definition's shadow stop (the rebalances stop before ``review``), and ends
there; ``tradeflow pm diff PRODUCTION_RUN SHADOW_RUN`` then says what the version would have
traded differently (:mod:`portfolio_manager.diff`).

What keeps production safe (docs/shadow.md):

- the definitions' validator refuses a rebalance where a shadow could reach ``review``,
  ``block`` or ``submit`` (``"effect": "external"``) without passing a ``"shadow": "stop"``;
- the engine never lets a shadow join a gather batch (the block orders);
- ``record_proposal`` writes a shadow's proposal to the shadow namespace (:func:`proposals_for`),
  which the review queue never reads, and gives it the engine's retention as a TTL: shadow
  proposals expire with their run;
- the brokerage adapter refuses any order of a shadow (``ShadowTradeRefused``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from engine.api import Engine
from engine.definitions.validation import validate_file
from portfolio_manager.book import Region
from portfolio_manager.proposals import ProposalStore
from portfolio_manager.sources import BookReader

#: The alias a definition file tried in a shadow is published under (never ``production``).
SHADOW_ALIAS = "shadow"
#: What a shadow proposal store's prefix adds to the production one.
SHADOW_NAMESPACE = "shadow:"


def shadow_run_label(run_date: date, version: int | str) -> str:
    """The default run of a shadow of ``run_date``'s morning with ``version``."""
    return f"shadow-{run_date.isoformat()}-{version}"


def proposals_for(store: ProposalStore, shadow: bool) -> ProposalStore:
    """``store`` for production; for a shadow, the same Redis under the shadow namespace (its own keys)."""
    if not shadow:
        return store
    return ProposalStore(store.client, store.prefix + SHADOW_NAMESPACE)


def expire_with_run(store: ProposalStore, run: str, account_id: str, seconds: int) -> None:
    """Give a shadow proposal (and its run's index keys) ``seconds`` to live: the engine's retention
    (:func:`portfolio_manager.services.engine_settings`), so it expires with its run."""
    ttl = seconds
    pipe = store.client.pipeline(transaction=False)
    for key in (store.key(run, account_id), store.accounts_key(run), store.runs_key):
        pipe.expire(key, ttl)
    pipe.execute()


@dataclass(frozen=True)
class ShadowStarted:
    """What :func:`start_shadow` did: the run it started, and the version each workflow runs."""

    run: str
    run_date: date
    versions: dict[str, int]
    started: dict[str, int]
    already_started: int
    skipped_regions: dict[str, str]


def publish_for_shadow(engine: Engine, path: Path) -> tuple[str, int]:
    """Validate the definition file at ``path``, publish it, point the shadow-only alias at it; (name, version)."""
    definition = validate_file(path)  # DefinitionError lists every problem with its JSON pointer
    version = engine.publish(definition, alias=SHADOW_ALIAS)
    return definition.name, version


def start_shadow(engine: Engine, book: BookReader, run_date: date, *, version: int | str = "canary",
                 definition: Path | None = None, run: str | None = None, limit: int | None = None,
                 regions: Iterable[Region | str] | None = None, wait_for_open: bool = False,
                 **more: Any) -> ShadowStarted:
    """Start a shadow of ``run_date``'s morning on the book as it is now (see the module docstring).

    With ``definition`` (a file), only the accounts of that workflow's region run, with the file's
    version; otherwise the ``regions`` (default: all) run ``version`` (a number or an alias of both
    rebalances). ``more`` goes to :func:`portfolio_manager.daily.start_daily_rebalance` (``review_until``...).
    """
    from portfolio_manager.daily import WORKFLOWS, start_daily_rebalance  # celery: imported on use

    ref: int | str = version
    if definition is not None:
        name, ref = publish_for_shadow(engine, definition)
        regions = [region for region, workflow in WORKFLOWS.items() if workflow == name]
        if not regions:
            known = ", ".join(WORKFLOWS.values())
            raise ValueError(f"{definition}: a shadow of the morning runs {known}, not {name!r}")
    label = run or shadow_run_label(run_date, ref if definition is None else f"{name}-v{ref}")
    started = start_daily_rebalance(engine, book, run_date, run=label, regions=regions, version=ref, limit=limit,
                                    wait_for_open=wait_for_open, shadow=True, **more)
    versions = {workflow: engine.resolve_version(workflow, ref) for workflow in started.started}
    return ShadowStarted(started.run, run_date, versions, started.started, started.already_started,
                         started.skipped_regions)


__all__ = ["SHADOW_ALIAS", "ShadowStarted", "expire_with_run", "proposals_for", "publish_for_shadow",
           "shadow_run_label", "start_shadow"]
