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
    # Documents waiting or being predicted at most; beyond it requests get 503 with Retry-After. At least
    # max_docs, so that the largest request allowed fits in an idle server's queue.
    max_queue: int = 1024
    # Documents in one request at most (422 beyond it); at most max_queue.
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
        """Raise ValueError naming every setting out of range, one sentence each (all above 0; the waits may be
        0), and a request limit the queue could never take (``max_docs`` above ``max_queue``)."""
        problems = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            may_be_zero = field.name in _MAY_BE_ZERO
            if not (value >= 0 if may_be_zero else value > 0):
                problems.append(
                    f"{_option(field.name)} must be {'0 or more' if may_be_zero else 'above 0'}, got {_shown(value)}"
                )
        if 0 < self.max_queue < self.max_docs:
            problems.append(
                f"--max-docs ({self.max_docs}) is above --max-queue ({self.max_queue}): a request of more than "
                f"{self.max_queue} documents could never be queued; lower --max-docs or raise --max-queue"
            )
        if problems:
            raise ValueError("; ".join(problems))


def _option(name: str) -> str:
    """The command-line option of a setting: ``max_wait_ms`` -> ``--max-wait-ms``."""
    return "--" + name.replace("_", "-")


def _shown(value: float) -> str:
    """A number as the user typed it: ``-5`` rather than ``-5.0``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


# Settings for which 0 means "do not wait".
_MAY_BE_ZERO = {"max_wait_ms", "drain_seconds"}


def check_port(port: int) -> None:
    """Raise ValueError unless ``port`` is one a server can listen on (0: any free port, printed once bound)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 1 to 65535 (or 0 for any free port), got {port}")


def check_device(device: str | None) -> None:
    """Raise ValueError, before any model is loaded, when torch cannot run on ``device`` (None: CUDA when
    available, else the CPU); the rules are ``govtopic.modeling.resolve_device``'s."""
    if device is None:
        return
    from govtopic.modeling import resolve_device

    resolve_device(device, "--device")
