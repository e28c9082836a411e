"""The HTTP service: ``govtopic serve MODEL`` answers prediction requests with dynamic batching.

Requests are parsed and checked on the event loop; each document becomes one item of a bounded queue, and a
single worker thread takes items as they come (up to ``max_batch_size`` documents, waiting at most
``max_wait_ms`` after the first for more) and predicts them together with ``TopicClassifier.predict``. Every
document carries its own future, so an answer can only ever go to the request that sent it, and a document
that fails gets its own error while the others of its request succeed.

Example:
    $ govtopic serve runs/quickstart/model --port 8000
    $ curl -s localhost:8000/predict -H 'content-type: application/json' \\
        -d '{"document": {"title": "关于加强城市规划管理的通知", "text": "各区人民政府……"}}'
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import govtopic
from govtopic.serve_errors import BodyLimitMiddleware, problems_response, validation_problems
from govtopic.serve_settings import ServeSettings
from govtopic.strategies import strategy_names

# The long-document strategies a request may ask for: the registry's (govtopic.strategies).
_STRATEGIES = strategy_names()

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- request and response bodies
class DocumentIn(BaseModel):
    """A document as an object: its title and body (either may be empty), and an optional id echoed back."""

    model_config = ConfigDict(extra="forbid", strict=True)
    title: str = ""
    text: str = ""
    id: str | None = None


class PredictRequest(BaseModel):
    """One document (``document``) or several (``documents``), with the options of ``predict()``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"documents": [{"title": "关于加强城市规划管理的通知", "text": "各区……"}]}]},
    )
    document: str | DocumentIn | None = Field(None, description="one document: its text, or {title, text, id}")
    documents: list[str | DocumentIn] | None = Field(None, description="several documents, answered in order")
    top_k: int = Field(1, ge=1, le=100, description="alternatives to return when above 1")
    long_doc: Literal[_STRATEGIES] | None = Field(None, description="override the strategy")
    return_evidence: bool = Field(False, description="add the passage that most supports the label")


# ---------------------------------------------------------------- batching
class QueueFull(Exception):
    """The queue holds ``max_queue`` documents already."""


@dataclass
class _Item:
    document: str | dict
    options: tuple  # (top_k, long_doc, return_evidence): only items with the same options share a call
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Batcher:
    """Groups documents from concurrent requests into batches predicted by one worker thread.

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
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._pending = 0  # documents queued or being predicted
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="govtopic-batcher", daemon=True)

    @property
    def pending(self) -> int:
        return self._pending

    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish every queued document, then end the worker."""
        self._queue.put(None)
        self._thread.join(timeout)

    async def submit(self, documents: list, top_k: int, long_doc: str | None, return_evidence: bool) -> list:
        """Results of ``documents`` in order: a result dict, or an Exception for a document that failed.

        Raises QueueFull (before queueing anything) when the documents do not fit in the queue.
        """
        with self._lock:
            if self._pending + len(documents) > self.settings.max_queue:
                raise QueueFull
            self._pending += len(documents)
        loop = asyncio.get_running_loop()
        options = (top_k, long_doc, return_evidence)
        futures = [loop.create_future() for _ in documents]
        for doc, fut in zip(documents, futures):
            self._queue.put(_Item(doc, options, fut, loop))
        return await asyncio.gather(*futures, return_exceptions=True)

    def _run(self) -> None:
        wait = self.settings.max_wait_ms / 1000
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, deadline = [first], time.monotonic() + wait
            while len(batch) < self.settings.max_batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:  # stop after this batch, with everything queued before it done
                    stopping = True
                    break
                batch.append(item)
            self._predict_batch(batch)
        self._drain()

    def _drain(self) -> None:
        """Documents still queued at stop (none when requests were awaited first) are predicted, not dropped."""
        rest = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        for start in range(0, len(rest), self.settings.max_batch_size):
            self._predict_batch(rest[start : start + self.settings.max_batch_size])

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
        with self._lock:
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


# ---------------------------------------------------------------- metrics
class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "govtopic_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.documents = Counter(
            "govtopic_documents", "Documents answered, by outcome", ["outcome"], registry=self.registry
        )
        self.batch_size = Histogram(
            "govtopic_batch_size",
            "Documents per predicted batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_seconds = Histogram("govtopic_batch_seconds", "Seconds per predicted batch", registry=self.registry)
        self.latency = Histogram(
            "govtopic_request_latency_seconds", "Seconds from request to answer", ["endpoint"], registry=self.registry
        )
        self.queue = Gauge("govtopic_queue_documents", "Documents queued or being predicted", registry=self.registry)

    def on_batch(self, n: int, seconds: float) -> None:
        self.batch_size.observe(n)
        self.batch_seconds.observe(seconds)


# ---------------------------------------------------------------- the application
def create_app(classifier, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``classifier`` (a loaded ``TopicClassifier``).

    Args:
        classifier: the model; its ``predict`` is called from one worker thread.
        settings: limits and batching (default ``ServeSettings()``).

    Example:
        >>> import uvicorn
        >>> app = create_app(TopicClassifier("runs/quickstart/model"), ServeSettings(max_batch_size=64))
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    settings = settings or ServeSettings()
    settings.check()
    metrics = _Metrics()
    batcher = Batcher(classifier.predict, settings, metrics.on_batch)
    state = {"accepting": False}

    async def lifespan(app: FastAPI):
        batcher.start()
        state["accepting"] = True
        logger.info(
            "serving %s: batches of up to %d documents, %.1f ms wait",
            classifier.source,
            settings.max_batch_size,
            settings.max_wait_ms,
        )
        yield
        # uvicorn stops accepting connections and lets open requests finish before this point.
        state["accepting"] = False
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(
        title="govtopic",
        version=govtopic.__version__,
        description="Topics (主题分类) of Chinese government documents.",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(_CountRequests, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, problems = validation_problems(exc.errors())
        return problems_response(status, message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def _refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problems_response(exc.status_code, str(exc.detail), [], headers=getattr(exc, "headers", None))

    @app.post("/predict", summary="Topics of one document or several")
    async def predict(body: PredictRequest) -> dict:
        """``{"document": D}`` gives ``{"result": R}``; ``{"documents": [D, ...]}`` gives ``{"results": [R, ...]}``
        in the same order. A document is a string (its text) or ``{"title", "text", "id"}``. A document that
        fails has ``{"error": ...}`` in its place; the others are answered as usual."""
        started = time.perf_counter()
        single = body.documents is None
        docs = _documents(body, settings)
        try:
            outcomes = await batcher.submit(docs, body.top_k, body.long_doc, body.return_evidence)
        except QueueFull:
            return problems_response(
                503,
                f"the server is busy: {settings.max_queue} documents are already waiting (--max-queue); retry after "
                f"{settings.retry_after_s} s, or start the server with a larger --max-queue",
                [],
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        finally:
            metrics.queue.set(batcher.pending)
        results = [_answer(outcome, metrics) for outcome in outcomes]
        for result, item in zip(results, [body.document] if single else body.documents):
            if isinstance(item, DocumentIn) and item.id is not None:
                result["id"] = item.id
        metrics.latency.labels("/predict").observe(time.perf_counter() - started)
        if single and "error" in results[0]:
            return problems_response(500, f"the document could not be predicted: {results[0]['error']}", [])
        return {"result": results[0]} if single else {"results": results}

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: the model is loaded and the batching worker runs")
    async def ready() -> Response:
        if state["accepting"] and batcher.alive():
            return JSONResponse({"status": "ready", "queued_documents": batcher.pending})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/info", summary="The model: labels, version and the settings it predicts with")
    async def info() -> dict:
        return model_info(classifier, settings)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        metrics.queue.set(batcher.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _CountRequests:
    """ASGI middleware counting answered requests by path and status (the refusals of other middleware too)."""

    def __init__(self, app, metrics: _Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in _PATHS else "other"

        async def counted(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(path, str(message["status"])).inc()
            await send(message)

        return await self.app(scope, receive, counted)


# Paths counted by name in the metrics; any other path is counted as "other" (bounded label values).
_PATHS = {"/predict", "/health", "/ready", "/info", "/metrics", "/docs", "/openapi.json"}


def _documents(body: PredictRequest, settings: ServeSettings) -> list[str | dict]:
    """The request's documents as predict() takes them; HTTPException 422 for a missing field or a limit."""
    if (body.document is None) == (body.documents is None):
        raise HTTPException(
            422,
            "expected exactly one of 'document' (one document) or 'documents' (a list), got "
            + ("both" if body.document is not None else "neither"),
        )
    items = [body.document] if body.documents is None else body.documents
    if len(items) > settings.max_docs:
        raise HTTPException(
            422,
            f"documents: {len(items)} documents in one request, above the limit of {settings.max_docs}; split the "
            "request, or start the server with a larger --max-docs",
        )
    docs: list[str | dict] = []
    for i, item in enumerate(items):
        doc = item if isinstance(item, str) else {"title": item.title, "text": item.text}
        chars = len(doc) if isinstance(doc, str) else len(doc["title"]) + len(doc["text"])
        if chars > settings.max_doc_chars:
            where = "document" if body.documents is None else f"documents[{i}]"
            raise HTTPException(
                422,
                f"{where}: {chars} characters, above the limit of {settings.max_doc_chars}; send a shorter "
                "document, or start the server with a larger --max-doc-chars",
            )
        docs.append(doc)
    return docs


def _answer(outcome, metrics: _Metrics) -> dict:
    if isinstance(outcome, BaseException):
        metrics.documents.labels("error").inc()
        return {"error": f"{type(outcome).__name__}: {outcome}"}
    metrics.documents.labels("predicted" if outcome.get("label") is not None else "no_label").inc()
    return dict(outcome)


def model_info(classifier, settings: ServeSettings) -> dict:
    """What ``/info`` answers: the labels, govtopic's version, the model record and the serving limits."""
    record = classifier.record
    return {
        "govtopic_version": govtopic.__version__,
        "model": classifier.source,
        "model_version": record.version,
        "labels": list(classifier.labels),
        "long_doc": dataclasses.asdict(classifier.long_doc),
        "title_rule": classifier.long_doc.title,
        "temperature": record.temperature,
        "ngram_weight": record.ngram_weight,
        "device": str(classifier.device),
        "limits": dataclasses.asdict(settings),
    }


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None, **kw) -> None:
    """Load ``model`` and serve it with uvicorn until stopped (Ctrl-C or SIGTERM finish accepted requests first).

    Args:
        model: model folder or Hub id.
        host, port: where to listen (127.0.0.1: this machine only; 0.0.0.0 for every interface).
        settings: limits and batching.
        kw: ``device``, ``quantize`` for ``TopicClassifier``.

    Example:
        >>> serve("runs/quickstart/model", port=8000, settings=ServeSettings(max_batch_size=64))
    """
    import uvicorn

    from govtopic.predict import TopicClassifier

    settings = settings or ServeSettings()
    settings.check()
    app = create_app(TopicClassifier(model, **kw), settings)
    print(f"govtopic serve: http://{host}:{port} (docs: /docs, metrics: /metrics)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=60)
