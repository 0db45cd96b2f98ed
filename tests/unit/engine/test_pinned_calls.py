"""PinnedCalls: the store's script calls on a connection each thread keeps, answering as the client does."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import fakeredis
import pytest
import redis
from redis.backoff import AbstractBackoff
from redis.retry import Retry

from engine.connections import PinnedCalls


@pytest.fixture
def calls(real_redis: redis.Redis) -> PinnedCalls:
    pinned = PinnedCalls(real_redis)
    assert pinned.pinned
    return pinned


def test_commands_answer_as_the_client_answers_them(calls: PinnedCalls, real_redis: redis.Redis,
                                                    key_prefix: str) -> None:
    key = f"{key_prefix}:h"
    assert calls.execute("HSET", key, "a", "1") == real_redis.execute_command("HSET", f"{key}2", "a", "1")
    assert calls.execute("HGETALL", key) == real_redis.execute_command("HGETALL", key) == {b"a": b"1"}
    assert calls.execute("SET", f"{key_prefix}:s", "x") is True  # the client's reply callbacks apply
    with pytest.raises(redis.ResponseError):
        calls.execute("INCR", key)  # WRONGTYPE: an error reply, read whole
    assert calls.execute("ECHO", "next") == b"next"  # the connection is still in step


def test_a_pipeline_answers_as_the_client_s_pipeline(calls: PinnedCalls, real_redis: redis.Redis,
                                                     key_prefix: str) -> None:
    key = f"{key_prefix}:h"
    commands = [("HSET", key, "a", "1"), ("INCR", key), ("HGETALL", key), ("EVALSHA", "0" * 40, 0)]
    replies = calls.pipeline(commands)
    real_redis.delete(key)
    pipe = real_redis.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    expected = pipe.execute(raise_on_error=False)
    assert [type(r) for r in replies] == [type(r) for r in expected]
    assert isinstance(replies[3], redis.exceptions.NoScriptError)
    assert replies[:3:2] == expected[:3:2] == [1, {b"a": b"1"}]


def test_each_thread_keeps_one_connection_outside_the_pool(calls: PinnedCalls, real_redis: redis.Redis) -> None:
    pool = real_redis.connection_pool
    mine = {calls.execute("CLIENT", "ID") for _ in range(5)}
    assert len(mine) == 1 and not pool._in_use_connections
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(calls.execute("CLIENT", "ID")))
    thread.start()
    thread.join()
    assert other and other[0] not in mine
    assert calls.execute("CLIENT", "ID") in mine


#: The failure counts the retry policy was asked to back off for (module-level: a connection copies its policy).
BACKOFFS: list[int] = []


class _RecordedBackoff(AbstractBackoff):
    """No wait, but every backoff the retry policy computes is recorded."""

    def compute(self, failures: int) -> float:
        BACKOFFS.append(failures)
        return 0.0


def test_a_connection_the_server_closed_is_replaced_at_once(real_redis: redis.Redis) -> None:
    where = real_redis.connection_pool.connection_kwargs
    client = redis.Redis(host=where["host"], port=where["port"], db=where["db"],
                         retry=Retry(_RecordedBackoff(), 3))
    calls = PinnedCalls(client)
    assert calls.pinned
    BACKOFFS.clear()
    first = calls.execute("CLIENT", "ID")
    real_redis.client_kill_filter(_id=first)  # as a restart or an idle timeout would
    second = calls.execute("CLIENT", "ID")
    assert second != first
    assert BACKOFFS == []  # sent again on a new connection at once, not through the retry policy's backoff
    assert calls.pipeline([("ECHO", "a"), ("ECHO", "b")]) == [b"a", b"b"]
    calls.close()
    client.close()


def test_a_reply_left_unread_is_never_read_by_the_next_command(calls: PinnedCalls, real_redis: redis.Redis,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first = calls.execute("CLIENT", "ID")

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(real_redis, "parse_response", interrupted)
        with pytest.raises(KeyboardInterrupt):
            calls.execute("ECHO", "stale")
    assert calls.execute("ECHO", "fresh") == b"fresh"
    assert calls.execute("CLIENT", "ID") != first  # dropped, and a new one made


def _child_id(url: str, calls: PinnedCalls, out: Any) -> None:
    out.send(calls.execute("CLIENT", "ID"))


def test_a_forked_child_makes_its_own_connection(calls: PinnedCalls, redis_url: str) -> None:
    parent = calls.execute("CLIENT", "ID")
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_id, args=(redis_url, calls, send))
    child.start()
    child.join(10)
    assert child.exitcode == 0 and receive.poll(1)
    assert receive.recv() != parent
    assert calls.execute("CLIENT", "ID") == parent  # the parent's connection was left alone


def test_close_disconnects_every_kept_connection(calls: PinnedCalls) -> None:
    first = calls.execute("CLIENT", "ID")
    calls.close()
    assert calls.execute("CLIENT", "ID") != first


def test_clients_of_their_own_kind_are_used_as_they_are(real_redis: redis.Redis, redis_url: str) -> None:
    class Counting(redis.Redis):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            return super().execute_command(*args, **options)

    assert not PinnedCalls(fakeredis.FakeRedis()).pinned
    assert not PinnedCalls(Counting.from_url(redis_url)).pinned
    assert not PinnedCalls(real_redis, pin=False).pinned
    fake = PinnedCalls(fakeredis.FakeRedis())
    assert fake.execute("ECHO", "a") == b"a" and fake.pipeline([("ECHO", "b")]) == [b"b"]
