"""govtopic's ``TopicClassifier`` behind LitServe's dynamic batching, for scripts/load_test.py to measure beside
``govtopic serve`` (issue 13: a maintained library's batching, or a measured reason to keep our own).

    python scripts/litserve_server.py runs/quickstart/model 8001 --max-batch-size 32 --batch-timeout-ms 5

``POST /predict`` takes govtopic serve's single-document request, ``{"document": {"title": ..., "text": ...}}``
(or ``{"document": "text"}``), checked by the same pydantic model (422 before batching), and answers
``{"result": R}`` with R as ``predict()`` gives it; ``GET /health`` is 200 once the model is loaded. Only that: no
``documents`` lists, options, limits or metrics, and a batch whose prediction fails answers 500 to every request
in it (LitServe's batched loop has no per-item errors).
Needs ``pip install litserve`` (the ``dev`` extra).
"""

import argparse
import signal

import litserve as ls
from pydantic import BaseModel, ConfigDict

from govtopic.serve import DocumentIn


class OneDocument(BaseModel):
    """govtopic serve's single-document request; LitServe validates it in its API process, as FastAPI does."""

    model_config = ConfigDict(extra="forbid", strict=True)
    document: str | DocumentIn


class TopicAPI(ls.LitAPI):
    """One ``TopicClassifier`` loaded in LitServe's inference worker; each batch is one ``predict()`` call."""

    def __init__(self, model: str, batch_size: int, **litapi_options):
        super().__init__(**litapi_options)
        self.model_path, self.batch_size = model, batch_size

    def setup(self, device: str) -> None:
        from govtopic.predict import TopicClassifier

        self.classifier = TopicClassifier(self.model_path, device=device)

    def decode_request(self, request: OneDocument) -> str | dict:
        doc = request.document
        return doc if isinstance(doc, str) else {"title": doc.title, "text": doc.text}

    def predict(self, docs: list) -> list[dict]:
        # With max_batch_size 1 LitServe passes one document, and predict() then answers with one result.
        return self.classifier.predict(docs, batch_size=self.batch_size, progress=False)

    def encode_response(self, result: dict) -> dict:
        return {"result": result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder, e.g. runs/quickstart/model")
    p.add_argument("port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--max-batch-size", type=int, default=32, help="documents per predict() call at most")
    p.add_argument("--batch-timeout-ms", type=float, default=5.0, help="LitServe's batch_timeout, in ms")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (predict's batch_size)")
    p.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ response transport")
    args = p.parse_args()
    # LitServe shuts down gracefully on KeyboardInterrupt only: on a bare SIGTERM its worker processes outlive
    # it. Both signals raise KeyboardInterrupt here (also when started with SIGINT ignored, as `cmd &` does).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    api = TopicAPI(
        args.model, args.batch_size, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout_ms / 1000
    )
    # max_batch_size and batch_timeout belong to LitAPI in litserve 0.2.19 (LitServer's are deprecated).
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=args.fast_queue)
    print(f"litserve_server: http://{args.host}:{args.port}/predict (health: /health)", flush=True)
    server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False)


if __name__ == "__main__":
    main()
