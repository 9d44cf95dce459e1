"""Direct chat requests per second that the simulator serves, through the real openai SDK.

The simulator runs in its own process. Clients are several processes (one openai client each, shared by a
few threads), because a single Python client process is itself CPU-bound well below the server's rate.
Prints one line of figures and then a JSON line. Target: at least 1,000 requests/s on a 2-core machine.

    python benchmarks/simulator_direct.py [--requests 6000] [--processes 2] [--threads 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from _common import free_port, print_json


@contextlib.contextmanager
def simulator(*flags: str) -> Iterator[tuple[str, int]]:
    """The simulator in a subprocess: yields (base_url, pid)."""
    port = free_port()
    command = [sys.executable, "-m", "gpt_batch_api.simulator", "--port", str(port), *flags]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the simulator did not start; run it by hand to see why: " + " ".join(command))
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_worker(base_url: str, requests: int, threads: int, start_at: float) -> tuple[int, int]:
    """Send ``requests`` chat calls from ``threads`` threads sharing one client; return (ok, failed)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    messages = [{"role": "user", "content": "Reply with a short greeting."}]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # warm up imports and the connection
    counts = [0, 0]
    lock = threading.Lock()

    def run(share: int) -> None:
        ok = failed = 0
        for _ in range(share):
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_completion_tokens=20)
                ok += 1
            except openai.OpenAIError:
                failed += 1
        with lock:
            counts[0] += ok
            counts[1] += failed

    time.sleep(max(0.0, start_at - time.time()))  # all processes start together
    workers = [threading.Thread(target=run, args=(requests // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts[0], counts[1]


def raw_worker(base_url: str, requests: int, threads: int, start_at: float) -> tuple[int, int]:
    """Like client_worker with a bare http.client connection per thread: shows what the simulator alone serves."""
    import http.client
    import json
    import urllib.parse

    url = urllib.parse.urlsplit(base_url)
    messages = [{"role": "user", "content": "Reply with a short greeting."}]
    body = json.dumps({"model": "gpt-4o-mini", "messages": messages, "max_completion_tokens": 20}).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    counts = [0, 0]
    lock = threading.Lock()

    def run(share: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port)
        ok = failed = 0
        for _ in range(share):
            conn.request("POST", url.path + "/chat/completions", body, headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                ok += 1
            else:
                failed += 1
        with lock:
            counts[0] += ok
            counts[1] += failed

    time.sleep(max(0.0, start_at - time.time()))
    workers = [threading.Thread(target=run, args=(requests // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts[0], counts[1]


WORKERS = {"openai": client_worker, "raw": raw_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000, help="total requests over all clients")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per client process")
    parser.add_argument(
        "--client",
        choices=("openai", "raw"),
        default="openai",
        help="openai: the real SDK (measures SDK + simulator); raw: a minimal http.client loop (the simulator alone)",
    )
    args = parser.parse_args()
    share = args.requests // args.processes
    with simulator() as (base_url, pid):
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.processes, mp_context=context) as pool:
            start_at = time.time() + 3.0  # time for the spawned processes to import openai
            futures = [
                pool.submit(WORKERS[args.client], base_url, share, args.threads, start_at)
                for _ in range(args.processes)
            ]
            time.sleep(max(0.0, start_at - time.time()))
            server_cpu0 = cpu_seconds(pid)
            results = [f.result() for f in futures]
        wall = time.time() - start_at
        server_cpu = cpu_seconds(pid) - server_cpu0
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    rate = ok / wall
    print(
        f"simulator direct chat: {ok} ok, {failed} failed in {wall:.2f} s = {rate:.0f} requests/s "
        f"({args.processes} {args.client} client processes x {args.threads} threads, HTTP/1.1 keep-alive); "
        f"simulator CPU {server_cpu / max(ok + failed, 1) * 1e6:.0f} us per request"
    )
    figures = {
        "benchmark": "simulator_direct",
        "client": args.client,
        "requests_ok": ok,
        "failed": failed,
        "wall_s": round(wall, 3),
        "requests_per_s": round(rate, 1),
        "server_cpu_us_per_request": round(server_cpu / max(ok + failed, 1) * 1e6, 1),
        "processes": args.processes,
        "threads": args.threads,
    }
    print_json(figures)


if __name__ == "__main__":
    main()
