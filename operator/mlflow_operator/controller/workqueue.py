"""A work queue of TrackingServer keys, in the shape of client-go's delaying work queue.

- A key waits in the queue at most once: adding it again only brings its time forward.
- A key is in at most one pass at a time: added during its pass, it runs again after that pass.
- Workers take keys when they are due, so a bounded number of passes run at once.
- One timer, at the earliest due time, wakes one waiting worker: a key that comes due wakes one
  worker, not all of them (with 32 workers and 500 servers resynced every minute, waking every
  idle worker for every key was a fifth of the operator's CPU at idle, py-spy's samples say).
- Intent goes first: of the keys that are due, one added for a change of its spec (`intent=True`)
  is taken before those added to observe their children or resync. While 500 Deployments roll
  out, their status events queue a pass each; an edit of a spec waited behind all of them.
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
        self._intent: set[Hashable] = set()  # waiting keys added for a change of intent
        self._heaps: dict[bool, list[tuple[float, int, Hashable]]] = {True: [], False: []}  # by intent
        self._active: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # keys added during their pass
        self._again_intent: set[Hashable] = set()
        self._waiters: collections.deque[asyncio.Future] = collections.deque()  # idle workers, first come first
        self._timer: asyncio.TimerHandle | None = None  # at the earliest due time
        self._order = itertools.count()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def add(self, key: Hashable, delay: float = 0.0, intent: bool = False) -> None:
        due = self._now() + max(0.0, delay)
        if key in self._active:
            self._again[key] = min(self._again.get(key, due), due)
            if intent:
                self._again_intent.add(key)
            return
        waiting = self._due.get(key)
        intent = intent or key in self._intent  # intent stays until the key is taken
        if waiting is not None and waiting <= due and (key in self._intent) == intent:
            return
        due = due if waiting is None else min(due, waiting)
        self._due[key] = due
        if intent:
            self._intent.add(key)
        heapq.heappush(self._heaps[intent], (due, next(self._order), key))
        self._arm()

    def forget(self, key: Hashable) -> None:
        """The object is gone: drop its waiting turn (a running pass ends on its own)."""
        self._due.pop(key, None)
        self._intent.discard(key)
        self._again.pop(key, None)
        self._again_intent.discard(key)

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
            self.add(key, again - self._now(), intent=key in self._again_intent)
        self._again_intent.discard(key)
        if next_in is not None:
            self.add(key, next_in)

    def _head_of(self, intent: bool) -> float | None:
        """The earliest due time in one heap, dropping entries replaced (by an earlier time or the
        other heap) or forgotten."""
        heap = self._heaps[intent]
        while heap and (self._due.get(heap[0][2]) != heap[0][0] or (heap[0][2] in self._intent) != intent):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _head(self) -> float | None:
        """The earliest due time of any key."""
        heads = [h for h in (self._head_of(True), self._head_of(False)) if h is not None]
        return min(heads) if heads else None

    def _take_due(self) -> Hashable | None:
        now = self._now()
        for intent in (True, False):
            due = self._head_of(intent)
            if due is not None and due <= now:
                break
        else:
            return None
        _, _, key = heapq.heappop(self._heaps[intent])
        del self._due[key]
        self._intent.discard(key)
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
