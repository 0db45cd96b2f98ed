"""bench.redis_sources: each command of a MONITOR capture or a SLOWLOG is put with the code that sent it."""

from __future__ import annotations

from bench.redis_sources import slowlog_tally, tally

MONITOR = [
    '1.0 [0 127.0.0.1:5] "EVALSHA" "ab" "6" "p:{i1}" "p:{i1}:acts" "p:timers" "p:deadlines" "p:q:svc" "p:queued" '
    '"{\\"op\\":\\"advance\\"}" "x"',
    '1.0 [0 lua] "HSET" "p:{i1}" "seq" "2"',
    '1.0 [0 lua] "LPUSH" "p:q:svc" "msg"',
    '1.1 [0 127.0.0.1:6] "EVALSHA" "cd" "2" "p:pm:accounts" "p:pm:cash" "p:pm:" "A1"',
    '1.1 [0 lua] "HGET" "p:pm:accounts" "A1"',
    '1.2 [0 127.0.0.1:7] "PUBLISH" "p:q:/0.celeryev/worker.heartbeat" "{}"',
    '1.3 [0 127.0.0.1:7] "ZADD" "p:q:unacked_index" "1.0" "tag"',
    '1.4 [0 127.0.0.1:8] "BRPOP" "p:q:svc" "1"',
    '1.5 [0 127.0.0.1:9] "ZREVRANGEBYSCORE" "p:pm:prices:X" "+inf" "-inf"',
]


def test_commands_inside_a_script_go_with_the_script_that_ran_them() -> None:
    counts = tally(MONITOR)
    assert counts[("engine script state.lua advance", "evalsha")] == 1
    assert counts[("engine script state.lua advance", "hset")] == 1
    assert counts[("engine script state.lua advance", "lpush")] == 1  # the next step's message, not kombu's
    assert counts[("platform (book read) (script)", "evalsha")] == 1
    assert counts[("platform (book read) (script)", "hget")] == 1


def test_plain_commands_are_told_apart_by_command_and_key() -> None:
    counts = tally(MONITOR)
    assert counts[("celery events", "publish")] == 1
    assert counts[("kombu delivery", "zadd")] == 1 and counts[("kombu delivery", "brpop")] == 1
    assert counts[("platform", "zrevrangebyscore")] == 1


def test_a_slowlog_is_summed_per_source_between_the_runs_first_creation_and_its_last_change() -> None:
    def entry(at: int, us: int, *args: bytes) -> list[object]:
        return [0, at, us, list(args), b"127.0.0.1:1", b""]

    create = entry(10, 500, b"EVALSHA", b"ab", b"9", b"p:{i1}", b"p:{i1}:acts", b"p:timers")
    advance = entry(12, 40, b"EVALSHA", b"ab", b"6", b"p:{i1}", b"p:{i1}:acts", b"p:timers", b"p:deadlines",
                    b"p:{i1}", b"p:queued", b'{"expect":{"seq":1}')
    seeding = entry(3, 999, b"HSET", b"p:pm:accounts", b"A1", b"{}")
    cleanup = entry(20, 999, b"DEL", b"p:{i1}")
    totals = slowlog_tally([cleanup, advance, create, seeding])
    assert totals[("engine script state.lua create_many", "evalsha")] == [1, 500.0]
    assert totals[("engine script state.lua (operation past the argument's first 128 characters: advance, "
                   "fail...)", "evalsha")] == [1, 40.0]
    assert not any(source == "platform" or command == "del" for source, command in totals)
