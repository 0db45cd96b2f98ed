"""The command line, run as a real subprocess: ``python -m order_calc plan FILE|-``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from order_calc import plan_orders

ROOT = Path(__file__).resolve().parents[3]


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "order_calc", *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
        timeout=60, check=False,
    )


def test_valid_request_from_stdin_prints_the_plan(spec_request) -> None:
    out = _run("plan", "-", stdin=json.dumps(spec_request))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == plan_orders(spec_request).model_dump(mode="json")
    assert json.loads(out.stdout)["orders"][0] == {"side": "SELL", "symbol": "VCN", "quantity": 66,
                                                   "reason": "REBALANCE", "est_value": 3121.8}


def test_valid_request_from_file_with_milp(spec_request, tmp_path: Path) -> None:
    spec_request["parameters"]["solver"] = "milp"
    path = tmp_path / "request.json"
    path.write_text(json.dumps(spec_request))
    out = _run("plan", str(path), "--indent", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1  # one line of JSON, nothing else on stdout
    assert json.loads(out.stdout)["cash_after"] == 19.95


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["lots"][0].update(quantity=-1), "lots[0].quantity"),
        (lambda d: d["account"].update(type="IRA"), "account.type"),
        (lambda d: d.update(as_of="2025-06-31"), "as_of"),
        (lambda d: d["prices"].pop("ZAG"), "prices.ZAG"),
    ],
)
def test_invalid_request_exits_2_naming_the_field(spec_request, mutate, field: str) -> None:
    mutate(spec_request)
    out = _run("plan", "-", stdin=json.dumps(spec_request))
    assert out.returncode == 2
    assert out.stdout == ""
    assert field in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_json_and_missing_file(tmp_path: Path) -> None:
    out = _run("plan", "-", stdin="{not json")
    assert (out.returncode, "Traceback" in out.stderr) == (2, False)
    assert "invalid JSON" in out.stderr
    out = _run("plan", str(tmp_path / "nope.json"))
    assert (out.returncode, "Traceback" in out.stderr) == (2, False)
    assert "cannot read" in out.stderr


def test_help() -> None:
    out = _run("--help")
    assert out.returncode == 0
    assert "plan" in out.stdout
    out = _run("plan", "--help")
    assert out.returncode == 0
    assert "FILE" in out.stdout and "stdin" in out.stdout
