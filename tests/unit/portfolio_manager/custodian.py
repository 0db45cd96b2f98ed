"""A tiny custodian REST API for HttpBook's tests: a real HTTP server on 127.0.0.1 in a thread.

It serves the endpoints documented in :mod:`portfolio_manager.http_book` from a RedisBook
(on fakeredis), and can be told to misbehave: fail the next N requests with a status, answer
slowly, or answer garbage. It records every request (method, path, headers).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import TypeAdapter, ValidationError

from portfolio_manager.book import Account, ModelPortfolio, TaxLot, Trade
from portfolio_manager.errors import AccountNotFound, ModelNotFound
from portfolio_manager.redis_book import RedisBook

API_ROOT = "/api/v1"
_LOTS = TypeAdapter(list[TaxLot])
_TRADES = TypeAdapter(list[Trade])


@dataclass
class Faults:
    """Misbehaviour to apply to the next requests."""

    fail_next: int = 0
    fail_status: int = 503
    delay_seconds: float = 0.0
    garbage: bool = False
    page_size: int = 1000


@dataclass
class Custodian:
    """A running server: its base URL, the book behind it, its faults and its request log."""

    base_url: str
    book: RedisBook
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, path_prefix: str) -> int:
        """How many requests matched ``method`` and started with ``path_prefix``."""
        return sum(1 for m, p, _ in self.requests if m == method and p.startswith(path_prefix))


def _handler(custodian: Custodian) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any = None, raw: bytes | None = None) -> None:
            body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            path = url.path.removeprefix(API_ROOT)
            parts = [unquote(p) for p in path.strip("/").split("/")] if url.path.startswith(API_ROOT) else ["?"]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            body = self._body() if method in ("PUT", "POST") else None
            faults = custodian.faults
            with custodian.lock:
                custodian.requests.append((method, url.path, dict(self.headers)))
                failing = faults.fail_next > 0
                if failing:
                    faults.fail_next -= 1
            if faults.delay_seconds:
                time.sleep(faults.delay_seconds)
            if failing:
                self._send(faults.fail_status, {"error": "injected"})
                return
            if faults.garbage:
                self._send(200, raw=b"<html>not json</html>")
                return
            try:
                status, payload = self._route(method, parts, query, body)
            except (AccountNotFound, ModelNotFound) as exc:
                status, payload = 404, {"error": str(exc)}
            except (ValidationError, ValueError, KeyError) as exc:
                status, payload = 400, {"error": str(exc)}
            self._send(status, payload)

        def _route(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
            book = custodian.book
            match method, parts:
                case "GET", ["accounts"]:
                    active_only = query.get("active_only", "true") == "true"
                    accounts = book.list_accounts(active_only=active_only)
                    start = int(query.get("cursor") or 0)
                    size = min(int(query.get("limit", 1000)), custodian.faults.page_size)
                    page = accounts[start : start + size]
                    nxt = str(start + size) if start + size < len(accounts) else None
                    return 200, {"accounts": [a.model_dump(mode="json") for a in page], "next_cursor": nxt}
                case "GET", ["accounts", account_id]:
                    return 200, book.get_account(account_id).model_dump(mode="json")
                case "GET", ["accounts", account_id, "holdings"]:
                    as_of = date.fromisoformat(query["as_of"])
                    holdings = book.get_holdings(account_id, as_of, int(query["lookback_days"]))
                    return 200, holdings.model_dump(mode="json")
                case "GET", ["models", model_id]:
                    return 200, book.get_model(model_id).model_dump(mode="json")
                case "GET", ["prices"]:
                    symbols = [s for s in query.get("symbols", "").split(",") if s]
                    return 200, {"prices": book.get_prices(symbols, date.fromisoformat(query["as_of"]))}
                case "PUT", ["accounts", account_id]:
                    account = Account.model_validate(body)
                    if account.id != account_id:
                        raise ValueError("id in path and body differ")
                    book.put_account(account)
                    return 204, None
                case "PUT", ["accounts", account_id, "lots"]:
                    book.get_account(account_id)
                    book.put_lots(account_id, _LOTS.validate_python(body))
                    return 204, None
                case "PUT", ["accounts", account_id, "cash"]:
                    book.get_account(account_id)
                    book.set_cash(account_id, float(body["cash"]))
                    return 204, None
                case "POST", ["trades"]:
                    book.put_trades(_TRADES.validate_python(body))
                    return 204, None
                case "PUT", ["models", model_id]:
                    book.put_model(ModelPortfolio.model_validate(body))
                    return 204, None
                case "PUT", ["prices", day]:
                    book.put_prices({k: float(v) for k, v in body.items()}, date.fromisoformat(day))
                    return 204, None
            return 404, {"error": f"no route {method} /{'/'.join(parts)}"}

        def do_GET(self) -> None:
            self._handle("GET")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


@contextmanager
def serve(book: RedisBook) -> Iterator[Custodian]:
    """Run a custodian server for ``book`` on an ephemeral port of 127.0.0.1."""
    custodian = Custodian(base_url="", book=book)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(custodian))
    server.daemon_threads = True
    custodian.base_url = f"http://127.0.0.1:{server.server_address[1]}{API_ROOT}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield custodian
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
