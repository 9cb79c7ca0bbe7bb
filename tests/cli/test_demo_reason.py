"""The demo's Reason column says whether the operator just decided or has been holding since."""

from __future__ import annotations

import datetime

from swell_cli.demo import decision_text

NOW = datetime.datetime(2026, 12, 1, 12, 0, 30, tzinfo=datetime.UTC)


def test_a_fresh_decision_is_shown_as_it_is() -> None:
    decision = {"replicas": 4, "reason": "backlog 120 needs 4", "time": "2026-12-01T12:00:30Z"}
    assert decision_text(decision, NOW) == "backlog 120 needs 4"


def test_an_old_decision_is_shown_as_holding_with_its_age() -> None:
    decision = {"replicas": 4, "reason": "backlog 120 needs 4", "time": "2026-12-01T12:00:00Z"}
    assert decision_text(decision, NOW) == "holding 4 for 30s: backlog 120 needs 4"


def test_no_decision_or_an_unreadable_time_shows_what_there_is() -> None:
    assert decision_text(None, NOW) == ""
    assert decision_text({"reason": "idle", "time": "soon"}, NOW) == "idle"
