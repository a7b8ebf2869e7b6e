"""Steady synthetic Istio traffic for health tests: a thread recording requests into an exporter."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tests.fixtures.prometheus import IstioExporter


@dataclass
class ArmTraffic:
    """Requests per tick for one version and how many of them fail with a 5xx."""

    ok: int
    errors: int = 0
    duration_ms: float = 20.0


@dataclass
class TrafficDriver:
    """Records ``arms`` every ``tick_seconds`` until stopped: a stand-in for the mesh's data plane."""

    exporter: IstioExporter
    arms: dict[str, ArmTraffic]
    tick_seconds: float = 0.1
    #: 503s per tick that callers' sidecars answer themselves (no healthy upstream)
    unreachable: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TrafficDriver:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for version, traffic in self.arms.items():
                self.exporter.record(
                    version, ok=traffic.ok, errors=traffic.errors, duration_ms=traffic.duration_ms
                )
            if self.unreachable:
                self.exporter.record_unreachable(self.unreachable)
            self._stop.wait(self.tick_seconds)
