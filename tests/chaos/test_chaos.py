"""The chaos suite's short version (small bursts, one round): the same scenarios as ``bench/chaos.py``.

Each breaks a real worker fleet or a real Redis on loopback and checks what became of every task: none
lost, none left unsettled, bad input dead-lettered with a reason, no settle acting on another consumer's
entry. Times are reported by the full run (bench/results/chaos.json), not asserted here.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import chaos

BACKENDS = list(chaos.BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_workers_sigkilled_during_a_burst_lose_nothing(backend: str) -> None:
    result = chaos.worker_kills(backend, tasks=300, kills=3)
    assert (result.lost, result.done + result.dead_lettered) == (0, result.sent), result
    assert result.dead_lettered == 0, result


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kill", [False, True], ids=["restart", "sigkill-aof"])
def test_redis_restarted_or_killed_with_aof_mid_burst_loses_nothing(backend: str, kill: bool) -> None:
    result = chaos.redis_restart(backend, tasks=300, kill=kill)
    assert result.lost == 0 and result.done == result.sent, result
    assert result.details["workers_alive"], result


@pytest.mark.parametrize("backend", BACKENDS)
def test_connection_drops_strand_no_task_while_the_workers_live(backend: str) -> None:
    [result] = chaos.connection_drops(backend, tasks=300, seconds=3, rounds=1)
    assert result.details["connections_dropped"] > 5, result
    assert result.details["workers_alive"], result
    assert result.lost == 0 and result.done == result.sent, result


def test_a_settle_never_acts_on_an_entry_another_consumer_claimed_over() -> None:
    result = chaos.claim_over()
    assert result.details["loser_settle_acted"] is False, result
    assert result.done == 1 and result.lost == 0, result


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_payloads_are_dead_lettered_with_reasons_and_good_ones_run(backend: str) -> None:
    result = chaos.bad_payloads(backend)
    assert result.details["every_bad_one_dead_lettered"], result
    assert result.details["good_done"] == 50 and result.lost == 0, result
    assert any("unknown handler" in reason for reason in result.details["reasons"]), result
    assert result.details["workers_alive"], result


def test_a_flood_of_large_pushes_is_refused_early_and_rss_stays_under_twice_idle() -> None:
    result = chaos.push_flood(requests=200)
    assert result.details["refused_429"] > 0, result  # more pushes than slots: some must wait for Pub/Sub
    assert result.details["other_answers"] == [], result
    assert result.details["rss_under_2x_idle"], result
    assert result.details["worker_alive"] and result.lost == 0, result


@pytest.mark.cluster
def test_the_leading_operator_killed_during_scale_in_loses_nothing(cluster: Any, workerpool_crd: str) -> None:
    """Uses the session's control plane (``cluster``); the standby takes the Lease and finishes the scale-in."""
    result = chaos.leader_killed_during_scale_in(tasks=150)
    assert result.lost == 0 and result.done == result.sent, result
    assert result.details["at_zero_after_seconds"] > result.details["standby_leading_after_seconds"], result
