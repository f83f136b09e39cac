"""Micro-batches formed when a slot is free (r4t.serve.batching), without Ray."""

from __future__ import annotations

import asyncio

import pytest

from r4t.serve.batching import MicroBatcher


def test_what_queues_while_the_slot_is_busy_goes_as_one_batch():
    sizes: list[int] = []
    release = asyncio.Event()

    async def run(items):
        sizes.append(len(items))
        await release.wait()
        return [i * 10 for i in items]

    async def main():
        batcher = MicroBatcher(run, slots=1, max_size=8, wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first batch, of one, is running
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 12)]
        await asyncio.sleep(0.01)
        assert sizes == [1]  # nothing else starts while the only slot is busy
        release.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(main())
    assert first == 0 and rest == [i * 10 for i in range(1, 12)]  # each caller gets its own result
    assert sizes == [1, 8, 3]  # then everything queued, up to max_size, at once


def test_a_failed_batch_fails_each_of_its_requests_and_frees_its_slot():
    async def run(items):
        if "bad" in items:
            raise ValueError("stage failed")
        return items

    async def main():
        batcher = MicroBatcher(run, slots=1, max_size=4, wait_s=0.01)
        results = await asyncio.gather(batcher.submit("bad"), batcher.submit("ok"), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)  # they shared the failing batch
        return await batcher.submit("later")

    assert asyncio.run(main()) == "later"


@pytest.mark.parametrize("slots", [1, 3])
def test_batches_in_flight_never_exceed_the_slots(slots):
    running, most = 0, 0

    async def run(items):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        running -= 1
        return items

    async def main():
        batcher = MicroBatcher(run, slots=slots, max_size=2, wait_s=0.0)
        return await asyncio.gather(*(batcher.submit(i) for i in range(40)))

    assert asyncio.run(main()) == list(range(40)) and most == slots
