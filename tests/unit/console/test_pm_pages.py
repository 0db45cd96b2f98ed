"""The portfolio managers' pages (a console plugin): filters, approve / reject, four-eyes list,
submit, the JSON API; on the real Redis, decisions through the portfolio manager's own API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from console.app import create_app
from portfolio_manager.actions import build_services, services_in_use
from portfolio_manager.config import PMSettings
from portfolio_manager.console_pages import plugin
from portfolio_manager.daily import ensure_definitions
from portfolio_manager.proposals import ProposalStatus, proposal_from_plan
from tests.unit.console.conftest import PASSWORD, Site, csrf_of

RUN = "review-run"


def _plan(symbol: str, value: float, tlh: bool) -> dict[str, Any]:
    lots = [{"lot_id": "L1", "quantity": 10, "realized_gain": -250.0, "term": "short"}] if tlh else None
    return {"mode": "REBALANCE", "orders": [{"side": "SELL", "symbol": symbol, "quantity": 10,
                                              "reason": "TLH" if tlh else "REBALANCE", "est_value": value,
                                              "lots": lots}]}


@pytest.fixture
def pm_site(site: Site, real_redis: Any, key_prefix: str) -> Iterator[Site]:
    svc = build_services(PMSettings(prefix=f"{key_prefix}:pm:"), client=real_redis)
    ensure_definitions(site.ctx.engine, PMSettings().definitions_dir)
    for account, region, kind, value, tlh in (("US-1", "US", "TAXABLE", 5000.0, True),
                                              ("US-2", "US", "IRA", 800.0, False),
                                              ("CA-1", "CA", "TFSA", 12000.0, False)):
        svc.proposals.record(proposal_from_plan(run=RUN, account={"id": account, "region": region, "type": kind},
                                                as_of="2026-11-25", workflow="rebalance", version=1,
                                                instance_id=f"i-{account}", plan=_plan("VTI", value, tlh)))
    site.app = create_app(site.ctx, plugins=[plugin()], sample=False)
    site.svc = svc  # type: ignore[attr-defined]
    with services_in_use(svc):
        yield site


def _rows(html: str) -> list[str]:
    return [a for a in ("US-1", "US-2", "CA-1") if f'value="{a}"' in html]


def test_filters_by_region_type_tlh_and_order_value(pm_site: Site) -> None:
    client = pm_site.login("pia", "pm")
    assert _rows(client.get(f"/pm/runs/{RUN}").text) == ["US-1", "US-2", "CA-1"]
    assert _rows(client.get(f"/pm/runs/{RUN}?region=US").text) == ["US-1", "US-2"]
    assert _rows(client.get(f"/pm/runs/{RUN}?tlh=yes").text) == ["US-1"]
    assert _rows(client.get(f"/pm/runs/{RUN}?account_type=TFSA").text) == ["CA-1"]
    assert _rows(client.get(f"/pm/runs/{RUN}?min_value=1000&max_value=6000").text) == ["US-1"]
    detail = client.get(f"/pm/runs/{RUN}/US-1").text
    assert "L1 \u00d7 10" in detail and "-250.00" in detail and "(short)" in detail


def test_approve_many_reject_needs_a_reason_and_submit_records_who(pm_site: Site) -> None:
    client = pm_site.login("pia", "pm")
    token = csrf_of(client.get(f"/pm/runs/{RUN}").text)
    answer = client.post(f"/pm/runs/{RUN}/decide", data={"csrf_token": token, "decision": "approve",
                                                         "accounts": ["US-1", "US-2"]})
    assert answer.status_code == 303
    store = pm_site.svc.proposals  # type: ignore[attr-defined]
    assert {p.account_id: (p.status, p.decided_by) for p in store.list(RUN, ["approved"])} == {
        "US-1": (ProposalStatus.APPROVED, "pia"), "US-2": (ProposalStatus.APPROVED, "pia")}
    page = client.get(f"/pm/runs/{RUN}/US-1").text
    assert "<td>pia</td>" in page  # the approvals made so far, and who made them
    client.post(f"/pm/runs/{RUN}/decide", data={"csrf_token": token, "decision": "reject", "accounts": ["CA-1"]})
    assert store.get(RUN, "CA-1").status is ProposalStatus.PROPOSED  # no reason: refused
    client.post(f"/pm/runs/{RUN}/decide", data={"csrf_token": token, "decision": "reject", "accounts": ["CA-1"],
                                                "note": "client called"})
    rejected = store.get(RUN, "CA-1")
    assert rejected.status is ProposalStatus.REJECTED and rejected.note == "client called"
    client.post(f"/pm/runs/{RUN}/submit", data={"csrf_token": token})
    submitted = store.list(RUN, ["submitting"])
    assert {p.account_id for p in submitted} == {"US-1", "US-2"} and {p.submitted_by for p in submitted} == {"pia"}
    assert store.get(RUN, "CA-1").status is ProposalStatus.REJECTED


def test_operators_and_viewers_may_not_review(pm_site: Site) -> None:
    for role in ("viewer", "operator"):
        client = pm_site.login(f"x-{role}", role)
        token = csrf_of(client.get(f"/pm/runs/{RUN}").text)
        for path, data in ((f"/pm/runs/{RUN}/decide", {"decision": "approve", "accounts": ["US-1"]}),
                           (f"/pm/runs/{RUN}/submit", {})):
            assert client.post(path, data={**data, "csrf_token": token}).status_code == 403, (role, path)
    assert pm_site.svc.proposals.get(RUN, "US-1").status is ProposalStatus.PROPOSED  # type: ignore[attr-defined]


def test_the_pm_api_with_a_token(pm_site: Site) -> None:
    pm_site.ctx.users.add("robot", "pm", PASSWORD)
    token, _ = pm_site.ctx.users.create_token("robot")
    client = pm_site.client()
    headers = {"Authorization": f"Bearer {token}"}
    listed = client.get(f"/api/pm/runs/{RUN}/proposals", headers=headers).json()["items"]
    assert sorted(p["account_id"] for p in listed) == ["CA-1", "US-1", "US-2"]
    raw = client.post(f"/api/pm/runs/{RUN}/approve", json={"accounts": ["US-2"]}, headers=headers)
    assert raw.status_code == 200, raw.text
    answer = raw.json()
    assert answer["changed"] == ["US-2"]
    one = client.get(f"/api/pm/runs/{RUN}/US-2", headers=headers).json()
    assert one["status"] == "approved" and one["approvals"][0]["by"] == "robot"
    assert client.post(f"/api/pm/runs/{RUN}/reject", json={"accounts": ["US-1"]}, headers=headers).status_code == 400
    assert client.get(f"/api/pm/runs/{RUN}/NOPE", headers=headers).status_code == 404


def test_a_proposal_reviewed_in_its_workflow_shows_four_eyes_the_cut_off_and_no_submit(pm_site: Site) -> None:
    store = pm_site.svc.proposals  # type: ignore[attr-defined]
    store.record(proposal_from_plan(run=RUN, account={"id": "CA-9", "region": "CA", "type": "TFSA"},
                                    as_of="2026-11-25", workflow="rebalance-ca", version=2, instance_id="i-CA-9",
                                    plan=_plan("XIU", 300000.0, False), cutoff=2_000_000_000.0,
                                    four_eyes_over=250000.0))
    client = pm_site.login("pia", "pm")
    page = client.get(f"/pm/runs/{RUN}/CA-9").text
    assert "two approvals by different people are needed (four-eyes)" in page and "<b>0 of 2</b>" in page
    assert "decide before (cut-off)" in page and "its workflow" in page
    assert 'value="approve"' in page and "Submit to the brokerage" not in page
    listing = client.get(f"/pm/runs/{RUN}").text
    assert "Once approved, the orders are sent to the brokerage for you" in listing and "four-eyes" in listing
    assert store.transition(RUN, "CA-9", ProposalStatus.EXPIRED)[0]
    expired = client.get(f"/pm/runs/{RUN}/CA-9").text
    assert "Expired: nobody decided before the cut-off, so nothing was sent" in expired
    assert "cut-off (passed)" in expired and 'value="approve"' not in expired and 'value="reject"' not in expired
    api = client.get(f"/api/pm/runs/{RUN}/CA-9").json()
    assert api["status"] == "expired" and api["review"]["decidable"] is False
    assert api["review"]["approvals_required"] == 2
