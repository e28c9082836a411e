"""Load test of ``govtopic serve``: throughput and latency of single-document requests at several concurrencies,
beside the same documents through ``predict()`` in-process and through a server without batching.

    python scripts/load_test.py runs/quickstart/model --docs 500 --concurrency 1 8 32

Servers run as subprocesses on 127.0.0.1 (free ports), one at a time; every level is bounded in requests
(each document once) and in time (``--time-limit`` seconds). The client shares the machine with the server,
so on a small machine its own CPU use lowers the server's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
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


def in_process(model: str, docs: list[dict], batch_size: int) -> list[dict]:
    """predict() on all documents at once (throughput), and one document per call (latency)."""
    from govtopic.predict import TopicClassifier

    clf = TopicClassifier(model, device="cpu")
    clf.predict(docs[:16], batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    clf.predict(docs, batch_size=batch_size)
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
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``govtopic serve`` in a subprocess on a free loopback port."""

    def __init__(self, model: str, max_batch_size: int, max_wait_ms: float, batch_size: int):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "govtopic.cli",
            "serve",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max-batch-size",
            str(max_batch_size),
            "--max-wait-ms",
            str(max_wait_ms),
            "--batch-size",
            str(batch_size),
            "--max-queue",
            "4096",
            "--device",
            "cpu",
        ]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> Server:
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode("utf-8", "replace")[-2000:]
                raise RuntimeError(f"the server exited with status {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server was not ready within 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _load(url: str, docs: list[dict], concurrency: int, time_limit: float) -> dict:
    """Each document once as a single-document request, ``concurrency`` at a time, stopping at ``time_limit``."""
    latencies, errors, next_doc = [], 0, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for doc in docs[:concurrency]:  # warm-up: open the connections
            await client.post("/predict", json={"document": doc})
        start = time.perf_counter()

        async def worker():
            nonlocal next_doc, errors
            while next_doc < len(docs) and time.perf_counter() - start < time_limit:
                doc, next_doc = docs[next_doc], next_doc + 1
                sent = time.perf_counter()
                answer = await client.post("/predict", json={"document": doc})
                latencies.append(time.perf_counter() - sent)
                errors += answer.status_code != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "docs": len(latencies),
        "seconds": seconds,
        "latencies": latencies,
        "errors": errors,
    }


def serve_rows(
    model: str, docs: list[dict], levels: list[int], batch: int, wait: float, limit: float, batch_size: int
) -> list[dict]:
    rows = []
    label = f"server, batches of up to {batch}" if batch > 1 else "server, no batching (max batch 1)"
    with Server(model, batch, wait, batch_size) as server:
        for concurrency in levels:
            result = asyncio.run(_load(server.url, docs, concurrency, limit))
            rows.append({"mode": label, "concurrency": concurrency, **result})
            print(f"  {label}, concurrency {concurrency}: {result['docs'] / result['seconds']:.1f} docs/s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| mode | concurrency | requests | docs/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = np.array(r["latencies"]) * 1000
        p50, p99 = (f"{np.percentile(lat, 50):.1f}", f"{np.percentile(lat, 99):.1f}") if len(lat) else ("-", "-")
        lines.append(
            f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['docs'] / r['seconds']:.1f} | "
            f"{p50} | {p99} | {r.get('errors', 0)} |"
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
    p.add_argument("--output", help="also write the figures as JSON here")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    docs = load_docs(args.docs)
    print(f"{len(docs)} documents from the test splits of {', '.join(s.name for s in SOURCES)}", flush=True)
    rows = in_process(args.model, docs, args.batch_size)
    settings = (args.time_limit, args.batch_size)
    rows += serve_rows(args.model, docs, args.concurrency, args.max_batch_size, args.max_wait_ms, *settings)
    rows += serve_rows(args.model, docs, args.concurrency, 1, 0.0, *settings)
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
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1), encoding="utf-8")
        print(f"figures written to {args.output}")


if __name__ == "__main__":
    main()
