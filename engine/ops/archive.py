"""Archive finished instances (with their activities) as gzipped JSON Lines before their TTL.

One file per run: ``<dir>/<run>.jsonl.gz``, one line per instance
``{"instance": {...}, "activities": [...]}``. ``s3://bucket/prefix`` uploads the same files
when boto3 is installed (credentials from the environment, as boto3 reads them).
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import ConfigurationError
from engine.instance import TERMINAL_STATUSES

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def archive_runs(engine: Any, runs: list[str], target: str) -> list[tuple[str, int]]:
    """Write the finished instances of ``runs`` to ``target`` (a directory or ``s3://``)."""
    s3 = target.startswith("s3://")
    directory = Path(tempfile.mkdtemp(prefix="tradeflow-archive-")) if s3 else Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for run in runs:
        path = directory / f"{_SAFE.sub('_', run)}.jsonl.gz"
        count = 0
        with gzip.open(path, "wt", encoding="utf-8") as out:
            for instance in engine.list(run, TERMINAL_STATUSES):
                record = {"instance": instance.to_dict(), "activities": engine.activities(instance.id)}
                out.write(json.dumps(record, default=str) + "\n")
                count += 1
        if count == 0:
            path.unlink()
            continue
        written.append((_upload(path, target) if s3 else str(path), count))
    return written


def _upload(path: Path, target: str) -> str:
    try:
        import boto3  # optional: only an s3:// target needs it
    except ImportError as exc:
        raise ConfigurationError("archiving to S3 needs boto3: pip install 'tradeflow[s3]'") from exc
    bucket, _, prefix = target[len("s3://"):].partition("/")
    key = f"{prefix.rstrip('/')}/{path.name}" if prefix else path.name
    boto3.client("s3").upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def read_archived(path: str, instance_id: str) -> dict[str, Any] | None:
    """Find ``instance_id`` in an archive file, or in every file of an archive directory."""
    root = Path(path)
    files = sorted(root.glob("*.jsonl.gz")) if root.is_dir() else [root]
    for file in files:
        with gzip.open(file, "rt", encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                if record["instance"]["id"] == instance_id:
                    return record
    return None
