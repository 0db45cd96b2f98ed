"""The console's Argon2id cost: argon2-cffi's default unless set; lower costs warn; bad ones are refused."""

from __future__ import annotations

import logging

import argon2
import pytest

from console.config import ConsoleSettings
from console.errors import ConsoleError

CHEAP = {"TRADEFLOW_CONSOLE_ARGON2_TIME_COST": "1", "TRADEFLOW_CONSOLE_ARGON2_MEMORY_KIB": "1024",
         "TRADEFLOW_CONSOLE_ARGON2_PARALLELISM": "1"}


def test_the_default_cost_is_argon2s_own_and_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="console.config"):
        hasher = ConsoleSettings.from_env({}).password_hasher()
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (3, 65536, 4)
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (
        argon2.DEFAULT_TIME_COST, argon2.DEFAULT_MEMORY_COST, argon2.DEFAULT_PARALLELISM)
    assert not caplog.records


def test_a_lower_cost_is_used_with_a_warning_and_still_verifies_a_default_cost_hash(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="console.config"):
        cheap = ConsoleSettings.from_env(CHEAP).password_hasher()
    assert (cheap.time_cost, cheap.memory_cost, cheap.parallelism) == (1, 1024, 1)
    assert "below the default Argon2id cost" in caplog.text
    made = cheap.hash("a long test password")
    assert made.startswith("$argon2id$") and "m=1024,t=1,p=1" in made
    assert cheap.verify(made, "a long test password")
    stronger = argon2.PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1).hash("a long test password")
    assert cheap.verify(stronger, "a long test password") and cheap.check_needs_rehash(stronger)


@pytest.mark.parametrize("variable,value", [("TRADEFLOW_CONSOLE_ARGON2_TIME_COST", "0"),
                                            ("TRADEFLOW_CONSOLE_ARGON2_PARALLELISM", "0"),
                                            ("TRADEFLOW_CONSOLE_ARGON2_MEMORY_KIB", "4")])
def test_a_cost_argon2_refuses_is_an_error_naming_the_settings(variable: str, value: str) -> None:
    with pytest.raises(ConsoleError, match="TRADEFLOW_CONSOLE_ARGON2_"):
        ConsoleSettings.from_env({**CHEAP, variable: value}).password_hasher()


def test_a_cost_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ConsoleError, match="bad TRADEFLOW_CONSOLE_"):
        ConsoleSettings.from_env({"TRADEFLOW_CONSOLE_ARGON2_TIME_COST": "cheap"})
