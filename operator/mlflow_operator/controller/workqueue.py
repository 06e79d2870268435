"""A work queue of TrackingServer keys, in the shape of client-go's delaying work queue.

- A key waits in the queue at most once: adding it again only brings its time forward.
- A key is in at most one pass at a time: added during its pass, it runs again after that pass.
- Workers take keys when they are due, so a bounded number of passes run at once.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Hashable


class WorkQueue:
    def __init__(self) -> None:
        self._due: dict[Hashable, float] = {}  # waiting keys and when they are due (loop time)
        self._heap: list[tuple[float, int, Hashable]] = []
        self._active: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # keys added during their pass
        self._changed = asyncio.Event()
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
        self._changed.set()

    def forget(self, key: Hashable) -> None:
        """The object is gone: drop its waiting turn (a running pass ends on its own)."""
        self._due.pop(key, None)
        self._again.pop(key, None)

    def __len__(self) -> int:
        return len(self._due)

    async def get(self) -> Hashable:
        while True:
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # an entry replaced by an earlier time, or forgotten
            wait = None
            if self._heap:
                due, _, key = self._heap[0]
                wait = due - self._now()
                if wait <= 0:
                    heapq.heappop(self._heap)
                    del self._due[key]
                    self._active.add(key)
                    return key
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    def done(self, key: Hashable, next_in: float | None) -> None:
        """The pass of `key` ended; it comes back in `next_in` seconds (None: only on an event)."""
        self._active.discard(key)
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again - self._now())
        if next_in is not None:
            self.add(key, next_in)
