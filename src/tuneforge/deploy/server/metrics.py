"""Prometheus text exposition (format 0.0.4), written by hand.

A dozen series do not justify a dependency; this module keeps counters, gauges and
histograms keyed by label values, thread-safe (the engine worker and the event loop
both record), and renders them on `GET /metrics`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Family:
    def __init__(self, name: str, kind: str, help: str, labels: tuple[str, ...], buckets: tuple = ()):
        self.name, self.kind, self.help, self.labels, self.buckets = name, kind, help, labels, buckets
        self.values: dict[tuple, float] = {}
        self.hist: dict[tuple, list] = {}  # label values -> [bucket counts..., sum, count]

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        if self.kind != "histogram":
            for key, v in sorted(self.values.items()):
                yield f"{self.name}{_labels(self.labels, key)} {_num(v)}"
            return
        for key, h in sorted(self.hist.items()):
            for le, c in zip(self.buckets + (math.inf,), h[:-2]):
                bound = f'le="{_num(le)}"'
                yield f"{self.name}_bucket{_labels(self.labels, key, bound)} {_num(c)}"
            yield f"{self.name}_sum{_labels(self.labels, key)} {_num(h[-2])}"
            yield f"{self.name}_count{_labels(self.labels, key)} {_num(h[-1])}"


class Metrics:
    """The server's series; `inc`/`set`/`observe` take label values in declaration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._gauge_fns: dict[str, Callable[[], dict[tuple, float]]] = {}
        f = self._declare
        f(
            "tuneforge_requests_total",
            "counter",
            "Finished requests by route, model and HTTP status.",
            ("route", "model", "status"),
        )
        f(
            "tuneforge_request_latency_seconds",
            "histogram",
            "Request latency, arrival to last byte.",
            ("route", "model"),
            LATENCY_BUCKETS,
        )
        f(
            "tuneforge_queue_wait_seconds",
            "histogram",
            "Time a request waited before generation began.",
            ("model",),
            LATENCY_BUCKETS,
        )
        f("tuneforge_prompt_tokens_total", "counter", "Prompt tokens processed.", ("model",))
        f("tuneforge_completion_tokens_total", "counter", "Completion tokens generated.", ("model",))
        f("tuneforge_tokens_per_second", "gauge", "Completion tokens/s of the last finished request.", ("model",))
        f("tuneforge_batch_tokens_per_second", "gauge", "Tokens/s of the whole last batch (all adapters).", ())
        f("tuneforge_batch_size", "histogram", "Sequences per generation batch.", (), BATCH_BUCKETS)
        f("tuneforge_cancelled_total", "counter", "Generations cancelled because the client went away.", ("model",))
        f(
            "tuneforge_queue_rejected_total",
            "counter",
            "Requests refused with 429 because the queue was full.",
            ("model",),
        )
        f("tuneforge_request_log_errors_total", "counter", "Request-log rows that could not be written.", ())
        f("tuneforge_queue_depth", "gauge", "Requests waiting for the generation worker.", ())
        f("tuneforge_adapters_loaded", "gauge", "LoRA adapters loaded on the base model.", ())

    def _declare(self, name: str, kind: str, help: str, labels: tuple, buckets: tuple = ()) -> None:
        self._families[name] = _Family(name, kind, help, labels, buckets)

    def inc(self, name: str, *labels: object, by: float = 1.0) -> None:
        with self._lock:
            fam = self._families[name]
            key = tuple(str(v) for v in labels)
            fam.values[key] = fam.values.get(key, 0.0) + by

    def set(self, name: str, value: float, *labels: object) -> None:
        with self._lock:
            self._families[name].values[tuple(str(v) for v in labels)] = value

    def observe(self, name: str, value: float, *labels: object) -> None:
        with self._lock:
            fam = self._families[name]
            h = fam.hist.setdefault(tuple(str(v) for v in labels), [0.0] * (len(fam.buckets) + 3))
            for i, le in enumerate(fam.buckets + (math.inf,)):
                if value <= le:
                    h[i] += 1
            h[-2] += value
            h[-1] += 1

    def gauge_from(self, name: str, fn: Callable[[], float]) -> None:
        """Read a label-less gauge at scrape time (queue depth lives in the engine)."""
        self._gauge_fns[name] = lambda: {(): float(fn())}

    def value(self, name: str, *labels: object) -> float:
        """Current value of a counter/gauge (tests and the bench read it)."""
        with self._lock:
            return self._families[name].values.get(tuple(str(v) for v in labels), 0.0)

    def render(self) -> str:
        for name, fn in self._gauge_fns.items():
            for key, v in fn().items():
                self.set(name, v, *key)
        with self._lock:
            return "\n".join(line for fam in self._families.values() for line in fam.lines()) + "\n"
