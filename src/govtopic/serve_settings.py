"""Limits and batching of the HTTP service (``govtopic serve``), kept apart so the command line can list them
without importing the web stack."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class ServeSettings:
    """Limits and batching of the service; each field is a ``govtopic serve`` option (``--max-batch-size``...).

    Example:
        >>> ServeSettings(max_batch_size=64, max_wait_ms=10).max_queue
        1024
    """

    # Documents predicted together at most: larger batches raise throughput until the model's forward pass
    # dominates, and raise every document's latency with it.
    max_batch_size: int = 32
    # Milliseconds the worker waits after the first document for others to join its batch.
    max_wait_ms: float = 5.0
    # Documents waiting or being predicted at most; beyond it requests get 503 with Retry-After.
    max_queue: int = 1024
    # Documents in one request at most (422 beyond it).
    max_docs: int = 64
    # Characters of one document (title + text) at most (422 beyond it): about 50 pages of text.
    max_doc_chars: int = 100_000
    # Bytes of one request body at most (413 beyond it).
    max_body_bytes: int = 8 * 1024 * 1024
    # Windows per forward pass inside a batch (TopicClassifier.predict's batch_size).
    batch_size: int = 32
    # Seconds a client is told to wait (Retry-After) when the queue is full or the server is shutting down.
    retry_after_s: int = 1
    # Seconds the server keeps listening after SIGTERM, answering /ready and new /predict requests with 503, so a
    # load balancer takes it out of rotation before it closes (0: close as soon as accepted requests are done;
    # set it to the balancer's readiness probe period or more).
    drain_seconds: float = 0.0

    def check(self) -> None:
        """Raise ValueError naming every setting out of range (all above 0; the waits may be 0)."""
        bad = [
            f.name
            for f in dataclasses.fields(self)
            if not (getattr(self, f.name) >= 0 if f.name in _MAY_BE_ZERO else getattr(self, f.name) > 0)
        ]
        if bad:
            options = ", ".join("--" + name.replace("_", "-") for name in bad)
            raise ValueError(
                f"govtopic serve: {options} must be above 0 (--max-wait-ms, --drain-seconds: 0 or more), got "
                f"{[getattr(self, n) for n in bad]}"
            )


# Settings for which 0 means "do not wait".
_MAY_BE_ZERO = {"max_wait_ms", "drain_seconds"}
