"""The embedding bench's batching floor: what a model server that batches whatever waits can reach at a rate."""

from __future__ import annotations

import pytest

from bench.embedding import batching_floor, fit_batch_cost


def test_the_batch_cost_fit_recovers_a_line() -> None:
    a, c = fit_batch_cost({b: 0.005 + 0.004 * b for b in (1, 8, 16, 32, 64)})
    assert a == pytest.approx(0.005)
    assert c == pytest.approx(0.004)


def test_a_nearly_idle_server_costs_one_call_plus_the_queue() -> None:
    assert batching_floor(0.1, 0.005, 0.004, 0.003) == pytest.approx(0.012, rel=0.01)


def test_the_floor_rises_with_the_rate_and_stays_bounded_below_capacity() -> None:
    low, high = (batching_floor(rate, 0.0055, 0.0039, 0.0046) for rate in (20, 100))
    assert low < high
    # At 100/s the server is free 39 % of the time per text: p95 is a few calls, not a runaway queue.
    assert 2 * (0.0055 + 0.0039 + 0.0046) < high < 0.06


def test_two_servers_wait_less_than_one_with_the_same_calls() -> None:
    one, two = (batching_floor(100, 0.0055, 0.0039, 0.0046, servers=n) for n in (1, 2))
    assert two < one


def test_two_servers_keep_up_where_one_alone_could_not() -> None:
    # Each text costs 12 ms on a server: one server does at most ~83/s at batch 1, two do ~166/s.
    a, c = 0.004, 0.008
    two = batching_floor(120, a, c, 0.0, servers=2)
    assert two < 0.1
    # A lone server only keeps up by batching: its waits are longer.
    assert batching_floor(120, a, c, 0.0, servers=1) > two
