"""The worked example of the order calculation's documentation page (docs/order-calc.md) is the code's real output."""

from __future__ import annotations

import json
import re
from pathlib import Path

from order_calc import plan_orders

PAGE = Path(__file__).resolve().parents[3] / "docs" / "order-calc.md"


def test_worked_example_matches_the_code() -> None:
    text = PAGE.read_text(encoding="utf-8")
    example = text[text.index("\n## Worked example\n") :]
    request_json, plan_json = re.findall(r"```json\n(.*?)```", example, flags=re.S)[:2]
    plan = plan_orders(json.loads(request_json))
    assert plan.model_dump(mode="json") == json.loads(plan_json)
    milp = json.loads(request_json)
    milp["parameters"]["solver"] = "milp"
    assert plan_orders(milp).model_dump(mode="json") == json.loads(plan_json)
