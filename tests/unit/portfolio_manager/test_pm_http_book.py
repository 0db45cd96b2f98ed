"""HttpBook against a real HTTP server on 127.0.0.1: retries, error mapping, paging, sessions."""

from __future__ import annotations

import socket

import pytest
import requests

from portfolio_manager.errors import (
    AccountNotFound,
    InvalidBookData,
    ModelNotFound,
    SourceRejected,
    SourceUnavailable,
)
from portfolio_manager.http_book import HttpBook
from tests.unit.portfolio_manager import data
from tests.unit.portfolio_manager.custodian import Custodian


@pytest.fixture
def filled(custodian: Custodian) -> Custodian:
    data.populate(custodian.book)
    return custodian


def client(custodian: Custodian, **kwargs: object) -> HttpBook:
    options: dict = {"timeout": 5, "backoff_factor": 0} | kwargs
    return HttpBook(custodian.base_url, **options)


def test_transient_503s_are_retried_until_success(filled: Custodian) -> None:
    filled.faults.fail_next = 2
    account = client(filled, retries=3).get_account("A1")
    assert account.id == "A1"
    assert filled.count("GET", "/api/v1/accounts/A1") == 3


def test_persistent_5xx_raises_source_unavailable_after_the_retries(filled: Custodian) -> None:
    filled.faults.fail_next, filled.faults.fail_status = 100, 500
    with pytest.raises(SourceUnavailable, match="HTTP 500 after retries") as info:
        client(filled, retries=2).get_holdings("A1", data.AS_OF, 30)
    assert info.value.retryable
    assert filled.count("GET", "/api/v1/accounts/A1/holdings") == 3  # first attempt + 2 retries


def test_writes_are_retried_too(filled: Custodian) -> None:
    filled.faults.fail_next = 1
    client(filled, retries=2).set_cash("A1", 42.0)
    assert filled.book.get_holdings("A1", data.AS_OF, 0).cash == 42.0
    assert filled.count("PUT", "/api/v1/accounts/A1/cash") == 2


def test_404_maps_to_not_found_errors(filled: Custodian) -> None:
    book = client(filled)
    with pytest.raises(AccountNotFound, match="'NOPE'"):
        book.get_account("NOPE")
    with pytest.raises(AccountNotFound, match="'NOPE'"):
        book.get_holdings("NOPE", data.AS_OF, 30)
    with pytest.raises(ModelNotFound, match="'NOPE'"):
        book.get_model("NOPE")
    assert filled.count("GET", "/api/v1/accounts/NOPE") == 2  # a 404 is not retried


def test_other_4xx_is_rejected_without_retry(filled: Custodian) -> None:
    filled.faults.fail_next, filled.faults.fail_status = 5, 400
    with pytest.raises(SourceRejected, match="HTTP 400"):
        client(filled).get_account("A1")
    assert filled.count("GET", "/api/v1/accounts/A1") == 1


def test_garbage_body_raises_invalid_book_data(filled: Custodian) -> None:
    filled.faults.garbage = True
    with pytest.raises(InvalidBookData, match="not JSON"):
        client(filled).get_account("A1")


def test_timeout_raises_source_unavailable(filled: Custodian) -> None:
    filled.faults.delay_seconds = 1.0
    with pytest.raises(SourceUnavailable, match="Timeout"):
        client(filled, timeout=0.2, retries=0).get_account("A1")


def test_nobody_listening_raises_source_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceUnavailable, match="ConnectionError"):
        HttpBook(f"http://127.0.0.1:{port}", timeout=1, retries=1, backoff_factor=0).get_account("A1")


def test_list_accounts_follows_the_cursor(filled: Custodian) -> None:
    filled.faults.page_size = 2
    ids = [a.id for a in client(filled).list_accounts(active_only=False)]
    assert ids == ["A1", "A2", "A3", "B1", "C1"]
    assert filled.count("GET", "/api/v1/accounts") == 3


def test_prices_go_in_chunks(filled: Custodian, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("portfolio_manager.http_book.PRICE_CHUNK", 2)
    prices = client(filled).get_prices(["VCN", "ZAG", "ZCN", "XIC", "XBB"], data.AS_OF)
    assert prices == {"VCN": 47.30, "ZAG": 14.15, "ZCN": 30.10}
    assert filled.count("GET", "/api/v1/prices") == 3


def test_a_callers_session_keeps_its_headers(filled: Custodian) -> None:
    session = requests.Session()
    session.headers["Authorization"] = "Bearer test-token"
    HttpBook(filled.base_url, session=session, timeout=5).get_account("A1")
    assert filled.requests[-1][2].get("Authorization") == "Bearer test-token"


def test_ids_are_percent_encoded(filled: Custodian) -> None:
    from portfolio_manager.book import Account

    odd = Account(id="ODD/1?x", region="US", type="IRA", model_id="US-M")
    book = client(filled)
    book.put_account(odd)
    assert book.get_account("ODD/1?x") == odd
