"""The BookSource contract on RedisBook (fakeredis) and on HttpBook (a live HTTP custodian)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from portfolio_manager.http_book import HttpBook
from portfolio_manager.redis_book import RedisBook
from portfolio_manager.sources import BookSource
from tests.unit.portfolio_manager import data
from tests.unit.portfolio_manager.contract import BookContract
from tests.unit.portfolio_manager.custodian import Custodian


class TestRedisBookOnFakeredis(BookContract):
    @pytest.fixture
    def book(self, fake_book: RedisBook) -> BookSource:
        return fake_book


class TestHttpBook(BookContract):
    @pytest.fixture
    def book(self, custodian: Custodian) -> BookSource:
        return HttpBook(custodian.base_url, timeout=5, backoff_factor=0)


def test_redis_book_keeps_to_its_prefix(fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.set("engine:something", "untouched")
    book = RedisBook(fake_redis, prefix="pm:")
    with book.batch() as writer:
        data.populate(writer)
    keys = {k.decode() for k in fake_redis.keys("*")}
    assert all(k.startswith("pm:") for k in keys - {"engine:something"})
    assert {"pm:accounts", "pm:cash", "pm:models", "pm:lots:A1", "pm:trades:A2", "pm:px:VCN"} <= keys
    deleted = book.clear()
    assert deleted == len(keys) - 1
    assert [k.decode() for k in fake_redis.keys("*")] == ["engine:something"]


def test_two_prefixes_are_two_books(fake_redis: fakeredis.FakeRedis) -> None:
    one, two = RedisBook(fake_redis, prefix="one:"), RedisBook(fake_redis, prefix="two:")
    data.populate(one)
    assert two.list_accounts(active_only=False) == []
    assert len(one.list_accounts(active_only=False)) == len(data.ACCOUNTS)


def test_batch_flushes_in_chunks_and_drops_the_rest_on_error(fake_redis: fakeredis.FakeRedis) -> None:
    book = RedisBook(fake_redis, prefix="pm:", flush_every=2)
    with pytest.raises(RuntimeError), book.batch() as writer:
        for account in data.ACCOUNTS[:3]:
            writer.put_account(account)  # the first two are flushed when the buffer reaches 2
        raise RuntimeError("stop")
    assert [a.id for a in book.list_accounts()] == ["A1", "A2"]


def count_round_trips(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the client's connection class to count what it sends (one packed send = one round trip)."""
    conn = client.connection_pool.get_connection()
    client.connection_pool.release(conn)
    sent: list[int] = []
    cls = type(conn)
    original = cls.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "send_packed_command", counting)
    return sent


def test_get_holdings_is_one_round_trip(fake_book: RedisBook, monkeypatch: pytest.MonkeyPatch) -> None:
    data.populate(fake_book)
    fake_book.get_holdings("B1", data.AS_OF, 30)  # first use loads the script (NOSCRIPT, load, again)
    sent = count_round_trips(fake_book.client, monkeypatch)
    h = fake_book.get_holdings("A1", data.AS_OF, 365)
    assert len(h.trade_history) == 5  # account + both linked accounts
    assert len(sent) == 1
    many = fake_book.get_holdings_many(["A1", "A2", "B1"], data.AS_OF, 30)
    assert list(many) == ["A1", "A2", "B1"] and len(sent) == 2
    assert fake_book.get_prices(["VCN", "ZAG", "XIC"], data.AS_OF) and len(sent) == 3


def test_script_is_reloaded_after_a_script_flush(fake_book: RedisBook) -> None:
    data.populate(fake_book)
    fake_book.get_holdings("A1", data.AS_OF, 30)
    fake_book.client.script_flush()
    assert len(fake_book.get_holdings("A1", data.AS_OF, 30).trade_history) == 3


def test_get_holdings_many_names_the_missing_account(fake_book: RedisBook) -> None:
    data.populate(fake_book)
    with pytest.raises(Exception, match="'ZZ'"):
        fake_book.get_holdings_many(["A1", "ZZ"], data.AS_OF, 30)


def test_negative_lookback_is_rejected(fake_book: RedisBook) -> None:
    with pytest.raises(ValueError, match="lookback_days"):
        fake_book.get_holdings("A1", data.AS_OF, -1)


def test_corrupt_stored_data_is_reported_not_crashed(fake_book: RedisBook) -> None:
    from portfolio_manager.errors import InvalidBookData

    data.populate(fake_book)
    fake_book.client.set("pm:lots:A1", '[{"lot_id": "L1"}]')
    with pytest.raises(InvalidBookData, match="A1"):
        fake_book.get_holdings("A1", data.AS_OF, 30)
    fake_book.client.hset("pm:accounts", "A2", "{not json")
    with pytest.raises(InvalidBookData, match="A2"):
        fake_book.get_account("A2")


def test_listing_names_a_bad_account_record_and_keeps_every_good_one(fake_book: RedisBook) -> None:
    """The listing validates accounts in chunks; one bad record sends its chunk one by one, so it is
    named (or raised) and every valid account of the chunk is still listed."""
    from portfolio_manager.errors import InvalidBookData

    data.populate(fake_book)
    good = {a.id for a in fake_book.list_accounts(active_only=False)}
    fake_book.client.hset("pm:accounts", "A9", "{not json")
    invalid: dict[str, str] = {}
    assert {a.id for a in fake_book.list_accounts(active_only=False, invalid=invalid)} == good
    assert list(invalid) == ["A9"] and "stored JSON is invalid" in invalid["A9"]
    with pytest.raises(InvalidBookData, match="A9"):
        fake_book.list_accounts()
