"""The morning benchmark's summary: the median peer ratio of repeated runs (``--repeat``), the growth with the book."""

from __future__ import annotations

from typing import Any

from bench.__main__ import _engine_and_peer, parse_args, ratio_medians, run_order, summary_lines


def run(accounts: int, solver: str, ratio: float | None) -> dict[str, Any]:
    return {"accounts_seeded": accounts, "solver": solver, "peer_ratio": ratio}


def test_each_size_and_solver_run_more_than_once_gets_its_median_and_every_value() -> None:
    runs = [run(20000, "greedy", 0.47), run(20000, "milp (definitions)", 0.80), run(20000, "greedy", 0.52),
            run(20000, "milp (definitions)", 0.70), run(20000, "greedy", 0.46), run(5000, "greedy", 0.63)]
    assert ratio_medians(runs) == [
        "20,000 accounts (greedy), 3 runs: median 0.47 x the plain-script peer (0.47, 0.52, 0.46)",
        "20,000 accounts (milp), 2 runs: median 0.75 x the plain-script peer (0.80, 0.70)",
    ]


def test_runs_without_the_peer_and_single_runs_give_no_median() -> None:
    assert ratio_medians([run(20000, "greedy", None), run(20000, "greedy", None), run(5000, "milp", 0.8)]) == []


def test_repeat_is_read_and_defaults_to_one_run() -> None:
    assert parse_args(["--only", "morning"]).repeat == 1
    assert parse_args(["--only", "morning", "--repeat", "3"]).repeat == 3


def test_growth_compares_book_sizes_not_the_repeats_of_one_size() -> None:
    from bench.morning import growth

    runs = [{"accounts_started": n, "seconds_per_1000_accounts": s}
            for n, s in ((5000, 1.5), (20000, 1.8), (5000, 1.6), (20000, 1.7))]
    assert growth(runs) == [{"accounts": 20000, "vs_accounts": 5000, "per_account_time_ratio": 1.2},
                            {"accounts": 20000, "vs_accounts": 5000, "per_account_time_ratio": 1.13}]


def test_rounds_alternate_which_side_runs_first_so_a_drifting_machine_weighs_on_both() -> None:
    assert [run_order(attempt, no_peer=False) for attempt in (1, 2, 3, 4)] == [
        ("engine", "peer"), ("peer", "engine"), ("engine", "peer"), ("peer", "engine")]
    assert run_order(2, no_peer=True) == ("engine",)


def commands(evalsha: float, reads: float) -> dict[str, Any]:
    return {"commands_per_account": 60.0, "command_ms_per_account": 0.4, "reads_per_account": reads,
            "all": {"evalsha": {"calls_per_account": evalsha, "usec_per_account": 250.0}}}


def test_the_engines_redis_figures_are_shown_beside_the_peers_when_it_ran() -> None:
    with_peer = {"redis_commands": commands(5.2, 6.0), "peer": {"redis_commands": commands(1.6, 3.7)}}

    def reads(figures: dict[str, Any]) -> str:
        return f"{figures['reads_per_account']:.1f}"

    assert _engine_and_peer(with_peer, reads) == "6.0 / 3.7"
    assert _engine_and_peer({"redis_commands": commands(5.2, 6.0)}, reads) == "6.0 / -"


def test_the_summary_names_every_script_call_and_the_reads_per_account() -> None:
    morning = {**run(20000, "greedy", 0.53), "workers": "cold", "fleets": ["engine:solo:1"], "accounts_per_s": 690.0,
               "cpu_ms_per_account": {"redis-server (whole server)": 0.52}, "redis_commands": commands(5.17, 6.02)}
    line = summary_lines({"morning": [morning]})[1]
    assert "5.17 script calls (EVALSHA, the engine's and the services'), 6.02 reads and 60.0 commands" in line
