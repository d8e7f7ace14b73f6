"""One bounded queue per device: jobs run one at a time, waiting is bounded, a full queue says when to retry."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from atelier.runtime.context import Cancellation
from atelier.runtime.errors import CancelledError, ResourceExhaustedError

log = logging.getLogger("atelier.generation.queue")

DONE = object()


@dataclass
class Ticket:
    """A submitted job: its events come out of ``events`` (anything, then DONE or an exception)."""

    id: int
    work: Callable[[Ticket], None]
    cancellation: Cancellation
    events: queue.Queue[Any] = field(default_factory=queue.Queue)
    started: threading.Event = field(default_factory=threading.Event)
    # Tickets with the same key may run together through batch_work (list of tickets, this one first).
    batch_key: Hashable | None = None
    batch_images: int = 1
    batch_work: Callable[[list[Ticket]], None] | None = None
    payload: Any = None

    def emit(self, event: Any) -> None:
        self.events.put(event)


class DeviceQueue:
    """A worker thread owning one device, with at most ``max_waiting`` jobs waiting for it."""

    def __init__(
        self,
        device: str,
        max_waiting: int,
        on_depth: Callable[[int], None] | None = None,
        max_batch_images: int = 1,
    ) -> None:
        self.device = device
        self.max_waiting = max_waiting
        self.max_batch_images = max_batch_images
        self._on_depth = on_depth or (lambda _d: None)
        self._cv = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._ids = itertools.count(1)
        self._closed = False
        self._mean_job_s = 5.0  # a first guess until jobs have run; then an exponential average
        self._thread = threading.Thread(target=self._loop, name=f"generation-{device}", daemon=True)
        self._thread.start()

    def submit(
        self,
        work: Callable[[Ticket], None],
        cancellation: Cancellation,
        batch_key: Hashable | None = None,
        batch_images: int = 1,
        batch_work: Callable[[list[Ticket]], None] | None = None,
        payload: Any = None,
    ) -> Ticket:
        with self._cv:
            if self._closed:
                raise ResourceExhaustedError("the generation service is shutting down", retry_after_s=5.0)
            if len(self._waiting) >= self.max_waiting:
                retry = self._mean_job_s * (len(self._waiting) + 1)
                raise ResourceExhaustedError(
                    f"the {self.device} queue is full ({len(self._waiting)} jobs waiting); retry in about "
                    f"{retry:.0f} s",
                    retry_after_s=retry,
                )
            ticket = Ticket(
                id=next(self._ids),
                work=work,
                cancellation=cancellation,
                batch_key=batch_key,
                batch_images=batch_images,
                batch_work=batch_work,
                payload=payload,
            )
            self._waiting.append(ticket)
            self._on_depth(len(self._waiting))
            self._cv.notify_all()
            return ticket

    def position(self, ticket: Ticket) -> int:
        """1-based place among waiting jobs; 0 once it runs (or left the queue)."""
        with self._cv:
            for place, waiting in enumerate(self._waiting, start=1):
                if waiting is ticket:
                    return place
            return 0

    def withdraw(self, ticket: Ticket) -> None:
        with self._cv:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                self._on_depth(len(self._waiting))

    def _take_batch(self, first: Ticket) -> list[Ticket]:
        """The first ticket plus waiting ones with its batch key, up to max_batch_images (caller holds _cv)."""
        group = [first]
        if first.batch_key is None or first.batch_work is None or self.max_batch_images <= 1:
            return group
        images = first.batch_images
        for ticket in list(self._waiting):
            if ticket.batch_key == first.batch_key and images + ticket.batch_images <= self.max_batch_images:
                if ticket.cancellation.cancelled:
                    continue
                self._waiting.remove(ticket)
                group.append(ticket)
                images += ticket.batch_images
        return group

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if self._closed and not self._waiting:
                    return
                first = self._waiting.popleft()
                group = self._take_batch(first)
                self._on_depth(len(self._waiting))
            for ticket in group:
                ticket.started.set()
            group = [t for t in group if not self._skip_cancelled(t)]
            if not group:
                continue
            began = time.monotonic()
            try:
                if len(group) == 1:
                    group[0].work(group[0])
                else:
                    assert group[0].batch_work is not None
                    group[0].batch_work(group)
                for ticket in group:
                    ticket.emit(DONE)
            except BaseException as exc:  # handed to the callers' threads, which raise it
                for ticket in group:
                    ticket.emit(exc)
            finally:
                self._mean_job_s = 0.7 * self._mean_job_s + 0.3 * (time.monotonic() - began)

    @staticmethod
    def _skip_cancelled(ticket: Ticket) -> bool:
        if ticket.cancellation.cancelled:
            ticket.emit(CancelledError(ticket.cancellation.reason or "cancelled while waiting"))
            return True
        return False

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for ticket in self._waiting:
                ticket.cancellation.cancel("the service is shutting down")
            self._cv.notify_all()
        if threading.current_thread() is not self._thread:
            # Wait for the worker to leave torch: a daemon thread still tearing down torch's thread state
            # when the interpreter exits aborts the process ("terminate called without an active exception").
            self._thread.join(timeout=30)
