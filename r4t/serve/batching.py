"""Micro-batches formed when there is capacity to run them.

Serve's `@serve.batch` forms a batch as soon as its wait ends and only then queues it for a free slot
(`max_concurrent_batches`), so under load many small batches queue behind a busy worker: measured on the demo's
artifacts at 32 concurrent clients, batches of 1-5 requests while 32 waited. Here a batch is formed when a slot
frees: everything that queued meanwhile (up to `max_size`) goes at once, so batches grow with the load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class MicroBatcher:
    def __init__(self, run: Callable[[list], Awaitable[list]], slots: int, max_size: int = 32, wait_s: float = 0.005):
        """run: a batch of items → their results, in order. slots: batches in flight at once. wait_s: how long a
        batch that is not full waits for more items once a slot is free (the latency a lone request pays)."""
        self.run, self.max_size, self.wait_s = run, max_size, wait_s
        self.slots = asyncio.Semaphore(slots)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop_task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()

    async def submit(self, item: Any) -> Any:
        """Queue one item; its result once its batch has run (or the batch's exception)."""
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = asyncio.get_running_loop().create_task(self._form_batches())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _form_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            await self.slots.acquire()  # the batch takes what queued while every slot was busy
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_size:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                elif loop.time() < deadline:
                    await asyncio.sleep(min(deadline - loop.time(), 0.001))  # polled: a cancelled get could drop one
                else:
                    break
            task = loop.create_task(self._run(batch))
            self.running.add(task)  # a strong reference until it ends: the loop keeps only weak ones
            task.add_done_callback(self.running.discard)

    async def _run(self, batch: list) -> None:
        try:
            results = await self.run([item for item, _ in batch])
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        except Exception as e:  # noqa: BLE001  (each request of the batch gets the error, whatever it is)
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
        finally:
            self.slots.release()
