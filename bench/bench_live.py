"""Live-view benchmark: does a stalled SSE client slow the run? And what do log records cost?

Three cases, each a fresh telemetry run of N tracked tasks (created, started, completed:
3 events each, plus TaskResolved) timed end to end (first event to ``flush()``):

* ``no live view``;
* ``live view, no client``: ``start_telemetry(live_port=0)``, nobody connected;
* ``live view, stalled client``: ``start_telemetry(live_port=0)`` with one SSE client that
  connected (receive buffer 4 KiB) and then reads nothing for the whole run;
* ``live view, reading client``: the same with a client reading everything.

Rounds alternate the cases; the best round of each is reported with the ratio to the first.
Then the cost of one captured ``logging`` call (``capture_logging``) against the same call
with no capture, per record.

    python bench/bench_live.py                # N = 20 000, 3 rounds
    python bench/bench_live.py --tasks 5000 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otelflow  # after the path fix above, so the checkout is benchmarked


def _client(address: tuple[str, int], read: bool) -> tuple[socket.socket, threading.Thread | None]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    if not read:
        return sock, None

    def drain() -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    th = threading.Thread(target=drain, daemon=True)
    th.start()
    return sock, th


def one_run(n: int, live: str, runs: str) -> float:
    tel = otelflow.start_telemetry(
        checkpoint_path=runs, resource_poll_interval=0, environ={},
        **({"live_port": 0} if live != "none" else {}),
    )
    sock = None
    if live in ("stalled", "reading"):
        sock, _ = _client(tel.live.address, read=(live == "reading"))
        deadline = time.monotonic() + 5
        while tel.live.hub.clients < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    trk = otelflow.tracker(backend="bench")
    t0 = time.perf_counter()
    for _ in range(n):
        tid = trk.created(None, "t")
        trk.started(tid)
        trk.completed(tid)
    tel.flush(120)
    elapsed = time.perf_counter() - t0
    summary = tel.stop(timeout=10)
    if sock is not None:
        sock.close()
    lost = summary["dropped"]["events"] + summary["dropped"]["subscriber_events"]
    if lost:
        print(f"  note: {lost} events dropped in case {live}", file=sys.stderr)
    return elapsed


def log_cost(n: int, runs: str) -> dict[str, float]:
    log = logging.getLogger("bench.app")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(logging.NullHandler())
    tel = otelflow.start_telemetry(checkpoint_path=runs, resource_poll_interval=0, environ={},
                                   queue_size=max(65536, 4 * n))
    t0 = time.perf_counter()
    for i in range(n):
        log.info("step %d", i, extra={"bench.i": i, "bench.ok": True})
    plain = time.perf_counter() - t0
    handle = otelflow.capture_logging("bench.app")
    t0 = time.perf_counter()
    for i in range(n):
        log.info("step %d", i, extra={"bench.i": i, "bench.ok": True})
    captured = time.perf_counter() - t0
    handle.stop()
    summary = tel.stop()
    return {
        "plain_us": plain / n * 1e6,
        "captured_us": captured / n * 1e6,
        "added_us": (captured - plain) / n * 1e6,
        "dropped": summary["dropped"]["log_records"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cases = ["none", "idle", "stalled", "reading"]
    best = dict.fromkeys(cases, float("inf"))
    with tempfile.TemporaryDirectory() as runs:
        for _ in range(args.rounds):
            for case in cases:
                best[case] = min(best[case], one_run(args.tasks, case, runs))
        logs = log_cost(min(args.tasks, 20_000), runs)
    result: dict[str, Any] = {
        "tasks": args.tasks,
        "seconds": best,
        "ratio_to_no_live_view": {c: best[c] / best["none"] for c in cases},
        "log_record": logs,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    names = {
        "none": "no live view",
        "idle": "live view, no client",
        "stalled": "live view, stalled client",
        "reading": "live view, reading client",
    }
    for case in cases:
        print(f"{names[case]:<28} {best[case]:7.3f} s  {best[case] / args.tasks * 1e6:6.1f} µs/task  "
              f"x{best[case] / best['none']:.2f}")
    print(f"logging call: {logs['plain_us']:.2f} µs plain, {logs['captured_us']:.2f} µs captured "
          f"(+{logs['added_us']:.2f} µs per record; {logs['dropped']} dropped)")


if __name__ == "__main__":
    main()
