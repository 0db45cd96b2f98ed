"""The book from a custodian's REST API, over ``requests``.

Endpoints assumed (paths relative to ``base_url``; bodies are the JSON of the
:mod:`portfolio_manager.book` models; ids are percent-encoded in paths)::

    GET  /accounts/{id}                                   -> Account           (404: unknown account)
    GET  /accounts?active_only=true&cursor=&limit=        -> {"accounts": [Account...], "next_cursor": str | null}
    GET  /accounts/{id}/holdings?as_of=&lookback_days=    -> Holdings          (404: unknown account)
    GET  /models/{id}                                     -> ModelPortfolio    (404: unknown model)
    GET  /prices?symbols=A,B&as_of=                       -> {"prices": {"A": 1.23}}  (unpriced symbols absent)

    PUT  /accounts/{id}          Account                  create or replace
    PUT  /accounts/{id}/lots     [TaxLot...]              replace every lot
    PUT  /accounts/{id}/cash     {"cash": 123.45}
    POST /trades                 [Trade...]               append; the same trade twice is kept once
    PUT  /models/{id}            ModelPortfolio
    PUT  /prices/{as_of}         {"A": 1.23, ...}

Every call is idempotent by this contract (POST /trades included), so every method is retried
on connection errors and on HTTP 429/500/502/503/504 by a urllib3 ``Retry`` mounted on the
session for ``base_url`` only (exponential backoff, ``Retry-After`` honoured). After the last
attempt a 5xx or a network failure raises :class:`SourceUnavailable`; a 404 raises
:class:`AccountNotFound` / :class:`ModelNotFound`; any other 4xx raises
:class:`SourceRejected`; a body that does not parse raises :class:`InvalidBookData`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any
from urllib.parse import quote

import requests
from pydantic import BaseModel, ValidationError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from portfolio_manager.book import Account, Holdings, ModelPortfolio, TaxLot, Trade
from portfolio_manager.errors import (
    AccountNotFound,
    BookError,
    InvalidBookData,
    ModelNotFound,
    SourceRejected,
    SourceUnavailable,
)

RETRY_STATUSES = (429, 500, 502, 503, 504)
PRICE_CHUNK = 200
PAGE_SIZE = 1000


def _seg(value: str) -> str:
    return quote(value, safe="")


class HttpBook:
    """A :class:`~portfolio_manager.sources.BookSource` over a custodian's REST API."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session | None = None,
        timeout: float = 10,
        retries: int = 3,
        backoff_factor: float = 0.3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "PUT", "POST", "DELETE", "HEAD"}),
            raise_on_status=False,
        )
        # Mounted for our base URL only: a caller's session keeps its other adapters.
        self.session.mount(self.base_url + "/", HTTPAdapter(max_retries=retry))

    def __repr__(self) -> str:
        return f"HttpBook({self.base_url!r})"

    # --- plumbing ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        not_found: BookError | None = None,
    ) -> Any:
        url = self.base_url + path
        try:
            response = self.session.request(method, url, params=params, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404 and not_found is not None:
            raise not_found
        if response.status_code >= 500 or response.status_code == 429:
            raise SourceUnavailable(f"{method} {url}: HTTP {response.status_code} after retries: {response.text[:200]}")
        if response.status_code >= 400:
            raise SourceRejected(f"{method} {url}: HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise InvalidBookData(f"{method} {url}: response is not JSON: {response.text[:200]}") from exc

    @staticmethod
    def _model(model: type[Any], payload: Any, what: str) -> Any:
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidBookData(f"{what}: custodian sent invalid data: {exc}") from exc

    @staticmethod
    def _dump(item: BaseModel) -> Any:
        return item.model_dump(mode="json")

    # --- reads ------------------------------------------------------------------------------------

    def get_account(self, account_id: str) -> Account:
        """GET /accounts/{id}; raises AccountNotFound on 404."""
        payload = self._call("GET", f"/accounts/{_seg(account_id)}", not_found=AccountNotFound(account_id))
        account: Account = self._model(Account, payload, f"account {account_id}")
        return account

    def list_accounts(self, active_only: bool = True, invalid: dict[str, str] | None = None) -> list[Account]:
        """GET /accounts, following ``next_cursor`` page by page; ordered by id.

        An invalid account raises InvalidBookData, unless ``invalid`` is given: then it is left
        out and its id (if it has one) and reason are put there.
        """
        accounts: list[Account] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"active_only": str(active_only).lower(), "limit": PAGE_SIZE}
            if cursor:
                params["cursor"] = cursor
            page = self._call("GET", "/accounts", params=params)
            if not isinstance(page, dict) or not isinstance(page.get("accounts"), list):
                raise InvalidBookData(f"GET /accounts: expected {{'accounts': [...]}}, got {str(page)[:200]}")
            for item in page["accounts"]:
                try:
                    accounts.append(self._model(Account, item, "account list"))
                except InvalidBookData as exc:
                    if invalid is None:
                        raise
                    invalid[str(item.get("id", "?")) if isinstance(item, dict) else "?"] = str(exc)
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if active_only:
            accounts = [a for a in accounts if a.active]
        return sorted(accounts, key=lambda a: a.id)

    def get_holdings(self, account_id: str, as_of: date, lookback_days: int) -> Holdings:
        """GET /accounts/{id}/holdings; trades outside the window are dropped if the custodian sends them."""
        payload = self._call(
            "GET",
            f"/accounts/{_seg(account_id)}/holdings",
            params={"as_of": as_of.isoformat(), "lookback_days": lookback_days},
            not_found=AccountNotFound(account_id),
        )
        holdings: Holdings = self._model(Holdings, payload, f"holdings of {account_id}")
        if holdings.account.id != account_id:
            raise InvalidBookData(f"asked for holdings of {account_id}, got {holdings.account.id}")
        low = as_of.toordinal() - lookback_days
        window = tuple(t for t in holdings.trade_history if low <= t.date.toordinal() <= as_of.toordinal())
        return holdings.model_copy(update={"trade_history": window, "as_of": as_of, "lookback_days": lookback_days})

    def get_model(self, model_id: str) -> ModelPortfolio:
        """GET /models/{id}; raises ModelNotFound on 404."""
        payload = self._call("GET", f"/models/{_seg(model_id)}", not_found=ModelNotFound(model_id))
        model: ModelPortfolio = self._model(ModelPortfolio, payload, f"model {model_id}")
        return model

    def get_prices(self, symbols: Iterable[str], as_of: date) -> dict[str, float]:
        """GET /prices, in chunks of ``PRICE_CHUNK`` symbols."""
        wanted = list(dict.fromkeys(symbols))
        prices: dict[str, float] = {}
        for start in range(0, len(wanted), PRICE_CHUNK):
            chunk = wanted[start : start + PRICE_CHUNK]
            payload = self._call("GET", "/prices", params={"symbols": ",".join(chunk), "as_of": as_of.isoformat()})
            found = payload.get("prices") if isinstance(payload, dict) else None
            if not isinstance(found, dict):
                raise InvalidBookData(f"GET /prices: expected {{'prices': {{...}}}}, got {str(payload)[:200]}")
            for symbol in chunk:
                value = found.get(symbol)
                if isinstance(value, int | float) and value > 0:
                    prices[symbol] = float(value)
        return prices

    # --- writes -----------------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[HttpBook]:
        """Writes over HTTP apply immediately; the batch is the book itself."""
        yield self

    def put_account(self, account: Account) -> None:
        """PUT /accounts/{id}."""
        self._call("PUT", f"/accounts/{_seg(account.id)}", body=self._dump(account))

    def put_lots(self, account_id: str, lots: Sequence[TaxLot]) -> None:
        """PUT /accounts/{id}/lots."""
        self._call(
            "PUT",
            f"/accounts/{_seg(account_id)}/lots",
            body=[self._dump(lot) for lot in lots],
            not_found=AccountNotFound(account_id),
        )

    def put_trades(self, trades: Iterable[Trade]) -> None:
        """POST /trades."""
        body = [self._dump(t) for t in trades]
        if body:
            self._call("POST", "/trades", body=body)

    def put_model(self, model: ModelPortfolio) -> None:
        """PUT /models/{id}."""
        self._call("PUT", f"/models/{_seg(model.id)}", body=self._dump(model))

    def put_prices(self, prices: Mapping[str, float], as_of: date) -> None:
        """PUT /prices/{as_of}."""
        self._call("PUT", f"/prices/{as_of.isoformat()}", body={k: float(v) for k, v in prices.items()})

    def set_cash(self, account_id: str, cash: float) -> None:
        """PUT /accounts/{id}/cash."""
        self._call(
            "PUT",
            f"/accounts/{_seg(account_id)}/cash",
            body={"cash": float(cash)},
            not_found=AccountNotFound(account_id),
        )


__all__ = ["HttpBook"]
