"""A work queue of TrackingServer keys, in the shape of client-go's delaying work queue.

- A key waits in the queue at most once: adding it again only brings its time forward.
- A key is in at most one pass at a time: added during its pass, it runs again after that pass.
- Workers take keys when they are due, so a bounded number of passes run at once.
- One timer, at the earliest due time, wakes one waiting worker: a key that comes due wakes one
  worker, not all of them (with 32 workers and 500 servers resynced every minute, waking every
  idle worker for every key was a fifth of the operator's CPU at idle, py-spy's samples say).
"""
from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from typing import Hashable


class WorkQueue:
    def __init__(self) -> None:
        self._due: dict[Hashable, float] = {}  # waiting keys and when they are due (loop time)
        self._heap: list[tuple[float, int, Hashable]] = []
        self._active: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # keys added during their pass
        self._waiters: collections.deque[asyncio.Future] = collections.deque()  # idle workers, first come first
        self._timer: asyncio.TimerHandle | None = None  # at the earliest due time
        self._order = itertools.count()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        due = self._now() + max(0.0, delay)
        if key in self._active:
            self._again[key] = min(self._again.get(key, due), due)
            return
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        self._arm()

    def forget(self, key: Hashable) -> None:
        """The object is gone: drop its waiting turn (a running pass ends on its own)."""
        self._due.pop(key, None)
        self._again.pop(key, None)

    def __len__(self) -> int:
        return len(self._due)

    async def get(self) -> Hashable:
        while True:
            key = self._take_due()
            if key is not None:
                return key
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._arm()
            try:
                await waiter
            finally:
                if not waiter.done():  # cancelled while waiting
                    waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # taken off by _fire

    def done(self, key: Hashable, next_in: float | None) -> None:
        """The pass of `key` ended; it comes back in `next_in` seconds (None: only on an event)."""
        self._active.discard(key)
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again - self._now())
        if next_in is not None:
            self.add(key, next_in)

    def _head(self) -> float | None:
        """The earliest due time, dropping entries replaced by an earlier time or forgotten."""
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _take_due(self) -> Hashable | None:
        due = self._head()
        if due is None or due > self._now():
            return None
        _, _, key = heapq.heappop(self._heap)
        del self._due[key]
        self._active.add(key)
        self._arm()  # the next key may be due already: it wakes the next worker
        return key

    def _arm(self) -> None:
        """One timer at the earliest due time, while a worker waits for it."""
        due = self._head()
        if due is None or not self._waiters:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None and self._timer.when() <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
