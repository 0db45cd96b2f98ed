"""The architecture page (docs/architecture.md) names every module of engine/, and only files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
#: A row of the module table: ``| `engine/....py` | its one job |``.
ROW = re.compile(r"^\|\s*`(engine/[\w/]+\.py)`\s*\|(.*)\|\s*$", re.M)
#: Any path of the engine named on the page, in the table or in the prose.
NAMED = re.compile(r"(?<![\w/.])engine/[\w/]+\.(?:py|lua)\b")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_python_file_of_engine_has_a_row_with_its_job() -> None:
    table = _section(PAGE.read_text(encoding="utf-8"), "Modules of engine/")
    rows = {path: job.strip() for path, job in ROW.findall(table)}
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "engine").rglob("*.py")}
    missing = sorted(on_disk - set(rows))
    assert not missing, f"add a row (file and its one job) to the table of docs/architecture.md for: {missing}"
    gone = sorted(set(rows) - on_disk)
    assert not gone, f"docs/architecture.md lists modules that no longer exist: {gone}"
    jobless = sorted(path for path, job in rows.items() if not job)
    assert not jobless, f"say the job of these modules in docs/architecture.md: {jobless}"


def test_every_file_the_page_names_exists() -> None:
    named = set(NAMED.findall(PAGE.read_text(encoding="utf-8")))
    assert len(named) > 60
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
