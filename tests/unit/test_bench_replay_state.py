"""bench.replay_state reads MONITOR lines back into the exact bytes each call carried."""

from __future__ import annotations

from bench.replay_state import monitor_arguments, of_prefix, state_calls


def test_escaped_bytes_quotes_and_backslashes_read_back_exactly() -> None:
    line = r'"EVALSHA" "ab" "x^\xcd\x01\"q\\\n" "{\"op\":\"advance\"}"'
    assert monitor_arguments(line) == [b"EVALSHA", b"ab", b'x^\xcd\x01"q\\\n', b'{"op":"advance"}']


def test_only_state_script_calls_are_kept_chains_named_by_their_length_and_other_prefixes_left_out() -> None:
    keys = ' "{p}" "{p}:acts" "p:timers" "p:deadlines" "{p}" "p:queued"'
    lines = [
        '1.0 [0 127.0.0.1:5] "EVALSHA" "s" "6"' + keys.replace("{p}", "p:{i1}")
        + r' "{\"op\":\"chain\",\"items\":[{},{}]}" "x"',
        '1.0 [0 lua] "HSET" "p:{i1}" "seq" "2"',
        '1.1 [0 127.0.0.1:5] "EVALSHA" "s" "6"' + keys.replace("{p}", "q:{i2}") + r' "{\"op\":\"start\"}"',
        '1.2 [0 127.0.0.1:6] "EVALSHA" "t" "2" "p:pm:accounts" "p:pm:cash" "p:pm:" "A1"',
        '1.3 [0 127.0.0.1:6] "RPOP" "p:q:svc"',
    ]
    calls = list(state_calls(lines))
    assert [c.op for c in calls] == ["chain of 2", "start"]
    assert [c.op for c in of_prefix(calls, b"p")] == ["chain of 2"] and calls[0].args[1] == b"x"
