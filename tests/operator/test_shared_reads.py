"""One read for everyone who asks at once, kept briefly, and never a hung read that holds every pool."""

from __future__ import annotations

import asyncio

import pytest
from swell_operator.shared_reads import SharedReads


async def test_callers_at_once_share_one_read_and_a_failed_read_is_not_kept() -> None:
    calls: list[str] = []
    fail = True

    async def read(key: str) -> str:
        calls.append(key)
        await asyncio.sleep(0.05)
        if fail:
            raise RuntimeError("API down")
        return f"answer {len(calls)}"

    reads: SharedReads[str, str] = SharedReads(read, max_age=60.0)
    failed = await asyncio.gather(*(reads.get("ns") for _ in range(20)), return_exceptions=True)
    assert all(isinstance(f, RuntimeError) for f in failed) and calls == ["ns"]
    fail = False
    assert await asyncio.gather(*(reads.get("ns") for _ in range(20))) == ["answer 2"] * 20, "failure not kept"
    assert await reads.get("ns") == "answer 2" and len(calls) == 2, "kept for max_age"
    assert await reads.get("ns", fresh=True) == "answer 3"


async def test_a_hung_read_times_out_for_everyone_waiting_and_the_next_caller_reads_again() -> None:
    hang = True

    async def read(key: str) -> str:
        if hang:
            await asyncio.sleep(3600)
        return "answer"

    reads: SharedReads[str, str] = SharedReads(read, max_age=60.0, timeout=0.2)
    waiting = await asyncio.wait_for(
        asyncio.gather(*(reads.get("ns") for _ in range(10)), return_exceptions=True), timeout=5
    )
    assert all(isinstance(w, TimeoutError) for w in waiting), waiting
    hang = False
    assert await asyncio.wait_for(reads.get("ns"), timeout=5) == "answer"


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_read_of_the_others() -> None:
    async def read(key: str) -> str:
        await asyncio.sleep(0.2)
        return "answer"

    reads: SharedReads[str, str] = SharedReads(read, max_age=60.0)
    impatient = asyncio.ensure_future(reads.get("ns"))
    patient = asyncio.ensure_future(reads.get("ns"))
    await asyncio.sleep(0.05)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert await patient == "answer"
