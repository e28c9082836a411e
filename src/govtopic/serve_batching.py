"""The dynamic batcher of ``govtopic serve``: documents of concurrent requests are queued, and one worker thread
predicts them in batches of up to ``max_batch_size``.

The worker takes every document queued and waits for more only while a request is arriving (received by the
server, its documents not yet queued), and at most ``max_wait_ms`` after the first: a lone request is predicted
at once, and requests that come together share a batch. Every document carries its own future, so an answer
can only go to the request that sent it, and a document that fails gets its own error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from govtopic.serve_settings import ServeSettings

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The documents submitted do not fit in the queue beside the ``queued`` documents already there."""

    def __init__(self, queued: int):
        super().__init__(f"{queued} documents queued")
        self.queued = queued


@dataclass
class _Item:
    document: str | dict
    options: tuple  # (top_k, long_doc, return_evidence): only items with the same options share a call
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Arrival:
    """A request received whose documents are not queued yet: while one is open, the worker waits for it (up to
    ``max_wait_ms``) rather than predicting a batch without it. ``Batcher.submit`` closes it once the documents
    are queued; ``close()`` closes it for a request that never gets there (refused, or the client left)."""

    def __init__(self, batcher: Batcher):
        self._batcher, self._open = batcher, True

    def close(self) -> None:
        """Stop waiting for this request (called on the event loop only, so no lock is needed for ``_open``)."""
        if self._open:
            self._open = False
            self._batcher._arrived()


class Batcher:
    """Groups documents from concurrent requests into batches predicted by one worker thread.

    The worker takes every document queued (up to ``max_batch_size``) and waits for more only while a request
    is arriving, i.e. received by the server but not yet queued (``arrive()``), and at most ``max_wait_ms``
    after the first: a lone request is predicted at once, and requests that come together are batched.

    Args:
        predict_fn: ``TopicClassifier.predict``-like callable taking a list of documents and keyword options.
        settings: batch size, wait and queue bound.
        on_batch: called with (documents, seconds) after each batch, for metrics.

    Example:
        >>> batcher = Batcher(clf.predict, ServeSettings()); batcher.start()
        >>> results = await batcher.submit(["各区人民政府……"], top_k=1, long_doc=None, return_evidence=False)
    """

    def __init__(self, predict_fn: Callable, settings: ServeSettings, on_batch: Callable | None = None):
        self.predict_fn, self.settings, self.on_batch = predict_fn, settings, on_batch
        self._items: deque[_Item] = deque()
        # Guards the queue and counts below, notified when the worker should look again; reentrant for Arrival.
        self._changed = threading.Condition(threading.RLock())
        self._pending = 0  # documents queued or being predicted
        self._arriving = 0  # requests received whose documents are not queued yet
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="govtopic-batcher", daemon=True)

    @property
    def pending(self) -> int:
        """Documents queued or being predicted."""
        return self._pending

    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish every queued document, then end the worker."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join(timeout)

    def arrive(self) -> Arrival:
        """Announce a request whose documents will be submitted soon, so that the worker waits for them."""
        with self._changed:
            self._arriving += 1
        return Arrival(self)

    def _arrived(self) -> None:
        with self._changed:
            self._arriving -= 1
            self._changed.notify()

    async def submit(
        self,
        documents: list,
        top_k: int,
        long_doc: str | None,
        return_evidence: bool,
        arrival: Arrival | None = None,
    ) -> list:
        """Results of ``documents`` in order: a result dict, or an Exception for a document that failed.

        Raises QueueFull (before queueing anything) when the documents do not fit in the queue. ``arrival``, from
        ``arrive()``, is closed once the documents are queued (or refused).
        """
        loop = asyncio.get_running_loop()
        options = (top_k, long_doc, return_evidence)
        futures = [loop.create_future() for _ in documents]
        try:
            with self._changed:
                if self._stopping:
                    raise RuntimeError("the batching worker has stopped: the server is shutting down")
                if self._pending + len(documents) > self.settings.max_queue:
                    raise QueueFull(self._pending)
                self._pending += len(documents)
                self._items.extend(_Item(doc, options, fut, loop) for doc, fut in zip(documents, futures))
                if arrival is not None:  # under the same lock (reentrant): the worker sees it queued or arriving
                    arrival.close()
                self._changed.notify()
        finally:
            if arrival is not None:  # refused: the worker need not wait for it
                arrival.close()
        return await asyncio.gather(*futures, return_exceptions=True)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._predict_batch(batch)

    def _next_batch(self) -> list[_Item] | None:
        """The next batch: the queued documents, and those of requests arriving within ``max_wait_ms`` of the
        first; None once stopped with nothing queued (documents queued at stop are predicted, not dropped)."""
        with self._changed:
            while not self._items:
                if self._stopping:
                    return None
                self._changed.wait()
            batch = [self._items.popleft()]
            deadline = time.monotonic() + self.settings.max_wait_ms / 1000
            while len(batch) < self.settings.max_batch_size:
                if self._items:
                    batch.append(self._items.popleft())
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping or self._arriving == 0:
                    break
                self._changed.wait(left)  # woken when documents are queued or a request stops arriving
            return batch

    def _predict_batch(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        live = [item for item in batch if not item.future.cancelled()]  # a client that left is not predicted
        groups: dict[tuple, list[_Item]] = {}
        for item in live:
            groups.setdefault(item.options, []).append(item)
        for (top_k, long_doc, evidence), items in groups.items():
            outcomes = self._predict_group([item.document for item in items], top_k, long_doc, evidence)
            for item, outcome in zip(items, outcomes):
                item.loop.call_soon_threadsafe(_settle, item.future, outcome)
        with self._changed:
            self._pending -= len(batch)
        if self.on_batch and live:
            self.on_batch(len(live), time.perf_counter() - started)

    def _predict_group(self, docs: list, top_k: int, long_doc: str | None, evidence: bool) -> list:
        options = {
            "batch_size": self.settings.batch_size,
            "top_k": top_k,
            "long_doc": long_doc,
            "return_evidence": evidence,
            "progress": False,
        }
        try:
            return list(self.predict_fn(docs, **options))
        except Exception as err:  # noqa: BLE001 - find the document(s) at fault; the others still get answers
            if len(docs) == 1:  # the fault is this document's: no need to predict it again
                logger.exception("a document failed")
                return [err]
            return [self._one(doc, options) for doc in docs]

    def _one(self, doc, options: dict):
        try:
            return self.predict_fn([doc], **options)[0]
        except Exception as err:  # noqa: BLE001 - reported to the client in this document's place
            logger.exception("a document failed")
            return err


def _settle(future: asyncio.Future, outcome: Any) -> None:
    if future.done():  # cancelled: the client went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
