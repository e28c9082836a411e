"""The HTTP service: ``govtopic serve MODEL`` answers prediction requests with dynamic batching.

Requests are parsed and checked on the event loop; their documents join one bounded queue, which a worker thread
predicts in batches (``govtopic.serve_batching``). On SIGTERM or Ctrl-C the server drains before it closes:
``/ready`` and new ``/predict`` requests answer 503 while the accepted requests finish (and for
``--drain-seconds`` at least), so a load balancer stops sending traffic first (``DrainingServer``).

Example:
    $ govtopic serve runs/quickstart/model --port 8000
    $ curl -s localhost:8000/predict -H 'content-type: application/json' \\
        -d '{"document": {"title": "关于加强城市规划管理的通知", "text": "各区人民政府……"}}'
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import govtopic
from govtopic.serve_batching import Batcher, QueueFull
from govtopic.serve_errors import (
    BodyLimitMiddleware,
    parse_problem,
    problems_response,
    validation_problems,
)
from govtopic.serve_settings import ServeSettings, check_device, check_port
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


class Problem(BaseModel):
    field: str = Field(description="the field as the client wrote it (documents[3].title), or body")
    problem: str = Field(description="what was expected and what was found")


class ErrorBody(BaseModel):
    """What every refusal and failure answers (4xx, 5xx)."""

    error: str = Field(description="what was expected, what was found, and what to change")
    problems: list[Problem] = Field(description="one entry per field at fault (empty for limits and the server)")


class NotReady(BaseModel):
    status: Literal["not ready"]
    reason: str = Field(description="starting, shutting down, or the batching worker stopped")
    queued_documents: int


def _errors(described: dict[int, str]) -> dict:
    """OpenAPI ``responses`` for error statuses, all answering ``ErrorBody``."""
    return {code: {"model": ErrorBody, "description": text} for code, text in described.items()}


# What /predict answers besides 200; declaring 422 also replaces FastAPI's own HTTPValidationError there.
_PREDICT_ERRORS = _errors(
    {
        400: "malformed JSON (also nested too deeply, or a number too long) or a body that is not UTF-8",
        413: "a body above --max-body-bytes",
        415: "a body not sent with content-type: application/json",
        422: "an invalid field, an empty body, more than --max-docs documents or one above --max-doc-chars",
        500: 'the one document of a {"document": ...} request could not be predicted, or the server failed',
        503: "the queue is full (--max-queue) or the server is shutting down; see Retry-After",
    }
)


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
@dataclass
class _Traffic:
    """The server's state as the application and ``DrainingServer`` share it (read and written on the loop)."""

    accepting: bool = False  # the batching worker runs (set by the lifespan)
    draining: bool = False  # shutting down: /ready and new /predict requests answer 503
    open_requests: int = 0  # /predict requests accepted and not yet answered


def create_app(classifier, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``classifier`` (a loaded ``TopicClassifier``).

    Args:
        classifier: the model; its ``predict`` is called from one worker thread.
        settings: limits and batching (default ``ServeSettings()``).

    Example:
        >>> app = create_app(TopicClassifier("runs/quickstart/model"), ServeSettings(max_batch_size=64))
        >>> run(app, host="127.0.0.1", port=8000)
    """
    settings = settings or ServeSettings()
    settings.check()
    metrics = _Metrics()
    batcher = Batcher(classifier.predict, settings, metrics.on_batch)
    traffic = _Traffic()

    async def lifespan(app: FastAPI):
        batcher.start()
        traffic.accepting = True
        logger.info(
            "serving %s: batches of up to %d documents, %.1f ms wait",
            classifier.source,
            settings.max_batch_size,
            settings.max_wait_ms,
        )
        yield
        # uvicorn (after DrainingServer's drain) stops accepting connections and lets open requests finish first.
        traffic.accepting = False
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(
        title="govtopic",
        version=govtopic.__version__,
        description="Topics (主题分类) of Chinese government documents.",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    app.state.traffic = traffic
    # The last added runs first: count every answer, then admit /predict requests, then check the body.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, json_paths=frozenset({"/predict"}))
    app.add_middleware(_AdmitPredictions, batcher=batcher, traffic=traffic, settings=settings)
    app.add_middleware(_CountRequests, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, problems = validation_problems(exc.errors())
        return problems_response(status, message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def _refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _UNPARSED:  # FastAPI's words for JSON its parser gave up on
            message, problem = parse_problem(exc.__cause__)
            return problems_response(400, message, [{"field": "body", "problem": problem}])
        return problems_response(exc.status_code, str(exc.detail), [], headers=getattr(exc, "headers", None))

    @app.post("/predict", summary="Topics of one document or several", responses=_PREDICT_ERRORS)
    async def predict(body: PredictRequest, request: Request) -> dict:
        """``{"document": D}`` gives ``{"result": R}``; ``{"documents": [D, ...]}`` gives ``{"results": [R, ...]}``
        in the same order. A document is a string (its text) or ``{"title", "text", "id"}``. A document that
        fails has ``{"error": ...}`` in its place; the others are answered as usual."""
        started = time.perf_counter()
        single = body.documents is None
        docs = _documents(body, settings)
        try:
            arrival = request.scope.get(_ARRIVAL)
            outcomes = await batcher.submit(docs, body.top_k, body.long_doc, body.return_evidence, arrival)
        except QueueFull as full:
            return problems_response(
                503,
                f"the server is busy: this request's {len(docs)} document(s) do not fit in the queue ({full.queued} "
                f"of --max-queue {settings.max_queue} taken); retry after {settings.retry_after_s} s, or start the "
                "server with a larger --max-queue",
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

    @app.get(
        "/ready",
        summary="Readiness: the model is loaded, the batching worker runs and no shutdown is under way",
        responses={503: {"model": NotReady, "description": "starting, shutting down or the worker stopped"}},
    )
    async def ready() -> Response:
        queued = batcher.pending
        if traffic.draining:
            reason = "shutting down"
        elif not traffic.accepting:
            reason = "starting"
        elif not batcher.alive():
            reason = "the batching worker stopped"
        else:
            return JSONResponse({"status": "ready", "queued_documents": queued})
        return JSONResponse({"status": "not ready", "reason": reason, "queued_documents": queued}, status_code=503)

    @app.get("/info", summary="The model: labels, version and the settings it predicts with")
    async def info() -> dict:
        return model_info(classifier, settings)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        metrics.queue.set(batcher.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


# FastAPI's detail for a body its JSON parser raised on with something other than a syntax error.
_UNPARSED = "There was an error parsing the body"
# The scope key under which _AdmitPredictions hands a request's Arrival to the endpoint.
_ARRIVAL = "govtopic.arrival"


class _AdmitPredictions:
    """ASGI middleware for ``/predict``: refuses new requests with 503 and Retry-After while the server drains;
    otherwise counts the request as open until answered (``DrainingServer`` waits for open requests) and as
    arriving until its documents are queued (the batcher waits for arriving requests, and only for them)."""

    def __init__(self, app, batcher: Batcher, traffic: _Traffic, settings: ServeSettings):
        self.app, self.batcher, self.traffic, self.settings = app, batcher, traffic, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict":
            return await self.app(scope, receive, send)
        if self.traffic.draining:
            retry = self.settings.retry_after_s
            refusal = problems_response(
                503,
                f"the server is shutting down and takes no new requests; retry after {retry} s (another instance "
                "may answer)",
                [],
                headers={"Retry-After": str(retry)},
            )
            return await refusal(scope, receive, send)
        arrival = scope[_ARRIVAL] = self.batcher.arrive()
        self.traffic.open_requests += 1
        try:
            await self.app(scope, receive, send)
        finally:
            arrival.close()  # refused before its documents were queued (bad body, limits) or the client left
            self.traffic.open_requests -= 1


class _CountRequests:
    """ASGI middleware counting answered requests by path and status (the refusals of other middleware too).

    An exception that escapes the application (a bug) is logged and answered here as a JSON 500, so that it is
    counted and the client gets the same kind of body as for any other error."""

    def __init__(self, app, metrics: _Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in _PATHS else "other"

        started = False

        async def counted(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.requests.labels(path, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception as err:  # noqa: BLE001 - answered and logged; uvicorn would answer a bare text 500
            if started:  # too late for another answer: uvicorn logs it and closes the connection
                raise
            logger.exception("%s %s failed", scope.get("method"), scope["path"])
            failure = problems_response(
                500, f"internal server error ({type(err).__name__}); the server log has the details", []
            )
            await failure(scope, receive, counted)


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
        "ngram_full_weight": record.ngram_full_weight,
        "device": str(classifier.device),
        "limits": dataclasses.asdict(settings),
    }


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining before it closes: on SIGTERM or Ctrl-C (or ``should_exit``) the application
    answers ``/ready`` and new ``/predict`` requests with 503 while the server still listens, for at least
    ``drain_seconds`` (so a load balancer sees it leave) and until the accepted requests are answered (at most
    ``timeout_graceful_shutdown`` seconds); then uvicorn's own shutdown follows. A second signal ends the drain
    at once; a second Ctrl-C, as in uvicorn, stops without waiting for anything.

    Args:
        config: uvicorn's configuration; its ``app`` is one made by ``create_app``.

    Example:
        >>> app = create_app(TopicClassifier("runs/quickstart/model"), ServeSettings(drain_seconds=5))
        >>> DrainingServer(uvicorn.Config(app, port=8000)).run()
    """

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[int], None] | None = None):
        super().__init__(config)
        self._signals, self._on_listening = 0, on_listening

    async def startup(self, sockets=None) -> None:
        """uvicorn's startup, then ``on_listening`` with the port bound."""
        await super().startup(sockets)
        if self._on_listening is not None and self.started and self.servers and self.servers[0].sockets:
            self._on_listening(self.servers[0].sockets[0].getsockname()[1])

    def handle_exit(self, sig: int, frame) -> None:
        """Count the signal (a second one ends the drain), then let uvicorn handle it."""
        self._signals += 1
        super().handle_exit(sig, frame)

    async def main_loop(self) -> None:
        """Serve until asked to exit, then drain."""
        await super().main_loop()
        await self.drain()

    async def drain(self) -> None:
        """Refuse new work while listening, for ``drain_seconds`` and until the open requests are answered."""
        state = getattr(self.config.app, "state", None)
        traffic, settings = getattr(state, "traffic", None), getattr(state, "settings", None)
        if traffic is None or settings is None:  # not an app from create_app: nothing to drain
            return
        traffic.draining = True
        signals, started = self._signals, time.monotonic()
        limit = max(settings.drain_seconds, self.config.timeout_graceful_shutdown or float("inf"))
        logger.info(
            "shutting down: /ready answers 503 for %.1f s and until %d open request(s) are answered",
            settings.drain_seconds,
            traffic.open_requests,
        )
        while not self.force_exit and self._signals <= max(signals, 1):
            waited = time.monotonic() - started
            if waited >= limit or (waited >= settings.drain_seconds and traffic.open_requests == 0):
                break
            await asyncio.sleep(0.05)


def run(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` (from ``create_app``) with ``DrainingServer`` until SIGTERM or Ctrl-C, then drain and stop;
    ``on_listening`` is called with the port once the server listens (port 0: any free port).

    Example:
        >>> run(create_app(TopicClassifier("runs/quickstart/model")), port=8000)
    """
    check_port(port)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=60)
    DrainingServer(config, on_listening).run()


def serve(model, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None, **kw) -> None:
    """Load ``model`` and serve it until stopped: on SIGTERM or Ctrl-C, ``/ready`` answers 503 while the accepted
    requests finish (and for ``settings.drain_seconds`` at least), then the server closes.

    Args:
        model: model folder or Hub id, or a loaded ``TopicClassifier``.
        host, port: where to listen (127.0.0.1: this machine only; 0.0.0.0 for every interface).
        settings: limits, batching and the drain.
        kw: ``device``, ``quantize`` for ``TopicClassifier``.

    Example:
        >>> serve("runs/quickstart/model", port=8000, settings=ServeSettings(max_batch_size=64))
    """
    from govtopic.predict import TopicClassifier

    settings = settings or ServeSettings()
    settings.check()
    check_port(port)
    check_device(kw.get("device"))
    classifier = model if hasattr(model, "predict") else TopicClassifier(model, **kw)
    app = create_app(classifier, settings)

    def listening(bound: int) -> None:  # the port bound, which --port 0 leaves to the system
        print(f"govtopic serve: http://{host}:{bound} (docs: /docs, metrics: /metrics)", flush=True)

    run(app, host=host, port=port, on_listening=listening)
