"""Load test of ``govtopic serve``: throughput and latency of single-document requests at several concurrencies,
beside the same documents through ``predict()`` in-process, through a server without batching and, with
``--litserve``, through LitServe's batching (scripts/litserve_server.py, same model and batch settings).

    python scripts/load_test.py runs/quickstart/model --docs 500 --concurrency 1 8 32 [--litserve]

Servers run as subprocesses on 127.0.0.1 (free ports), one at a time; every level is bounded in requests
(each document once) and in time (``--time-limit`` seconds). Every answer's label is checked against
in-process ``predict()``'s: the errors column counts failed requests and wrong labels. The client shares the
machine with the server, so on a small machine its own CPU use lowers the server's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "data" / "official.jsonl.gz", ROOT / "data" / "regulations_sample.jsonl.gz"]


def load_docs(n: int) -> list[dict]:
    """``n`` test-split documents (title + text), taken in turn from each source."""
    per_source = []
    for path in SOURCES:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        per_source.append(
            [{"title": r.get("title") or "", "text": r.get("text") or ""} for r in rows if r["split"] == "test"]
        )
    docs = [doc for group in zip(*per_source) for doc in group]
    longest = max(len(g) for g in per_source)
    docs += [g[i] for i in range(min(len(g) for g in per_source), longest) for g in per_source if i < len(g)]
    return docs[:n]


def in_process(model: str, docs: list[dict], batch_size: int) -> tuple[list[dict], list[str | None]]:
    """predict() on all documents at once (throughput), and one document per call (latency); and the labels of
    the one call, which every server's answers are checked against."""
    from govtopic.predict import TopicClassifier

    clf = TopicClassifier(model, device="cpu")
    clf.predict(docs[:16], batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    labels = [r["label"] for r in clf.predict(docs, batch_size=batch_size)]
    seconds = time.perf_counter() - start
    rows = [
        {
            "mode": "predict() in-process, one call",
            "concurrency": "-",
            "requests": 1,
            "docs": len(docs),
            "seconds": seconds,
            "latencies": [],
        }
    ]
    latencies = []
    for doc in docs:
        started = time.perf_counter()
        clf.predict(doc, batch_size=batch_size)
        latencies.append(time.perf_counter() - started)
    rows.append(
        {
            "mode": "predict() in-process, one doc per call",
            "concurrency": 1,
            "requests": len(docs),
            "docs": len(docs),
            "seconds": sum(latencies),
            "latencies": latencies,
        }
    )
    return rows, labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``command(port)`` started on entering, on a free loopback port, in a subprocess (its own process group),
    and ready when ``ready_path`` answers 200; stopped on leaving with SIGTERM, then the rest of its group."""

    def __init__(self, command: Callable[[int], list[str]], ready_path: str):
        self.command, self.ready_path = command, ready_path

    def __enter__(self) -> Server:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.command(port), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode("utf-8", "replace")[-2000:]
                raise RuntimeError(f"the server exited with status {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("the server was not ready within 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
        # A server's worker processes (LitServe's) must not outlive it, even when it did not stop them.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def govtopic_server(model: str, max_batch_size: int, max_wait_ms: float, batch_size: int) -> Server:
    """``govtopic serve``."""
    options = ["--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms), "--batch-size"]
    options += [str(batch_size), "--max-queue", "4096", "--device", "cpu", "--host", "127.0.0.1", "--port"]
    return Server(lambda port: [sys.executable, "-m", "govtopic.cli", "serve", model, *options, str(port)], "/ready")


def litserve_server(model: str, max_batch_size: int, max_wait_ms: float, batch_size: int) -> Server:
    """scripts/litserve_server.py (LitServe's batching)."""
    script = str(ROOT / "scripts" / "litserve_server.py")
    options = ["--max-batch-size", str(max_batch_size), "--batch-timeout-ms", str(max_wait_ms)]
    options += ["--batch-size", str(batch_size)]
    return Server(lambda port: [sys.executable, script, model, str(port), *options], "/health")


async def _batches(client: httpx.AsyncClient) -> tuple[float, float] | None:
    """(documents, batches) predicted so far, from govtopic serve's /metrics; None for a server without them."""
    try:
        answer = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    figures = {}
    for line in answer.text.splitlines() if answer.status_code == 200 else []:
        name, _, value = line.partition(" ")
        if name in ("govtopic_batch_size_sum", "govtopic_batch_size_count"):
            figures[name] = float(value)
    if len(figures) < 2:
        return None
    return figures["govtopic_batch_size_sum"], figures["govtopic_batch_size_count"]


async def _load(url: str, docs: list[dict], labels: list, concurrency: int, time_limit: float) -> dict:
    """Each document once as a single-document request, ``concurrency`` at a time, stopping at ``time_limit``;
    an answer is wrong when its label is not ``labels``' (in-process predict()) for that document. Also the
    mean documents per predicted batch, where the server's /metrics tells."""
    latencies, failed, wrong, next_doc = [], 0, 0, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for doc in docs[:concurrency]:  # warm-up: open the connections
            await client.post("/predict", json={"document": doc})
        before = await _batches(client)
        start = time.perf_counter()

        async def worker():
            nonlocal next_doc, failed, wrong
            while next_doc < len(docs) and time.perf_counter() - start < time_limit:
                i, next_doc = next_doc, next_doc + 1
                sent = time.perf_counter()
                answer = await client.post("/predict", json={"document": docs[i]})
                latencies.append(time.perf_counter() - sent)
                if answer.status_code != 200:
                    failed += 1
                elif answer.json()["result"]["label"] != labels[i]:
                    wrong += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        after = await _batches(client)
    per_batch = None
    if before and after and after[1] > before[1]:
        per_batch = (after[0] - before[0]) / (after[1] - before[1])
    return {
        "docs_per_batch": per_batch,
        "requests": len(latencies),
        "docs": len(latencies),
        "seconds": seconds,
        "latencies": latencies,
        "errors": failed + wrong,
        "failed": failed,
        "wrong": wrong,
    }


def serve_rows(
    label: str, server: Server, docs: list[dict], labels: list, levels: list[int], limit: float
) -> list[dict]:
    """One row per concurrency level, all against ``server`` (started here, stopped after the last level)."""
    rows = []
    with server:
        for concurrency in levels:
            result = asyncio.run(_load(server.url, docs, labels, concurrency, limit))
            rows.append({"mode": label, "concurrency": concurrency, **result})
            per_batch = f", {result['docs_per_batch']:.1f} docs/batch" if result["docs_per_batch"] else ""
            print(
                f"  {label}, concurrency {concurrency}: {result['docs'] / result['seconds']:.1f} docs/s{per_batch}, "
                f"{result['failed']} failed, {result['wrong']} wrong labels",
                flush=True,
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| mode | concurrency | requests | docs/s | p50 ms | p99 ms | docs/batch | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat = np.array(r["latencies"]) * 1000
        p50, p99 = (f"{np.percentile(lat, 50):.1f}", f"{np.percentile(lat, 99):.1f}") if len(lat) else ("-", "-")
        per_batch = f"{r['docs_per_batch']:.1f}" if r.get("docs_per_batch") else "-"
        lines.append(
            f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['docs'] / r['seconds']:.1f} | "
            f"{p50} | {p99} | {per_batch} | {r.get('errors', 0)} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder, e.g. runs/quickstart/model")
    p.add_argument("--docs", type=int, default=500)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (in-process and server)")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per level at most")
    p.add_argument(
        "--litserve",
        action="store_true",
        help="also LitServe's batching (scripts/litserve_server.py) with the same batch settings; needs litserve",
    )
    p.add_argument("--output", help="also write the figures as JSON here")
    args = p.parse_args()
    if args.litserve and importlib.util.find_spec("litserve") is None:
        p.error("--litserve needs LitServe: pip install litserve (or pip install -e '.[dev]')")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    docs = load_docs(args.docs)
    print(f"{len(docs)} documents from the test splits of {', '.join(s.name for s in SOURCES)}", flush=True)
    rows, labels = in_process(args.model, docs, args.batch_size)
    batch, wait, load = args.max_batch_size, args.max_wait_ms, (docs, labels, args.concurrency, args.time_limit)
    servers = [
        (f"server, batches of up to {batch}", govtopic_server(args.model, batch, wait, args.batch_size)),
        ("server, no batching (max batch 1)", govtopic_server(args.model, 1, 0.0, args.batch_size)),
    ]
    if args.litserve:
        servers.append((f"litserve batching, up to {batch}", litserve_server(args.model, batch, wait, args.batch_size)))
    for label, server in servers:
        rows += serve_rows(label, server, *load)
    print(table(rows))

    def rate(mode_start: str, concurrency) -> float:
        row = next(r for r in rows if r["mode"].startswith(mode_start) and r["concurrency"] == concurrency)
        return row["docs"] / row["seconds"]

    top = max(args.concurrency)
    batched, unbatched = rate("server, batches", top), rate("server, no batching", top)
    inproc = rate("predict() in-process, one call", "-")
    print(
        f"\nat concurrency {top}: batched server = {batched / inproc:.0%} of in-process predict() (target >= 70%), "
        f"{batched / unbatched:.1f}x the server without batching (target >= 4x)"
    )
    if args.litserve:
        print(f"at concurrency {top}: batched server = {batched / rate('litserve', top):.2f}x LitServe's batching")
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1), encoding="utf-8")
        print(f"figures written to {args.output}")


if __name__ == "__main__":
    main()
