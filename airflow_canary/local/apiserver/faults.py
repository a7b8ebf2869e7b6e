"""Faults the local API server can be told to inject, each answered as a real cluster answers it: an unreachable validating webhook, throttling, random request failures and a write outage."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_canary.local.apiserver.request import ApiError, ResourcePath

#: Istio's validating webhook and the groups it intercepts (istiod's ValidatingWebhookConfiguration).
ISTIO_WEBHOOK = "validation.istio.io"
ISTIO_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io")

#: Random faults ``errorFraction`` draws from. ``500``: InternalError, nothing stored. ``429``:
#: TooManyRequests with Retry-After (API Priority and Fairness). ``reset``: the connection is
#: dropped before the request is handled. ``reset-after-write``: a write is stored, then its
#: connection dropped before the reply (the client cannot know it succeeded).
ERROR_KINDS = ("500", "429", "reset", "reset-after-write")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: What kube-apiserver answers while etcd cannot commit: the storage error is not a
#: metav1.Status, so responsewriters.ErrorToAPIStatus makes it 500 with reason "" (Unknown) and
#: etcd's message (as logged "apiserver received an error that is not an metav1.Status").
ETCD_TIMEOUT = "etcdserver: request timed out"


class ResetConnection(Exception):
    """Drop this request's connection (before handling it, or after a write was stored)."""


@dataclass
class Faults:
    """Counters of requests still to fail; each failing request uses one up.

    ``webhook_failures``: writes (create, update, patch) to objects in ``webhook_groups`` get
    500 InternalError "failed calling webhook", what the apiserver answers while the webhook's
    backend (istiod) is down and its ``failurePolicy`` is ``Fail``.
    ``webhook_denials``: such writes are denied by the webhook: 400 BadRequest "admission webhook
    ... denied the request: <denial_message>" (a webhook's denial without a code of 400 or more
    becomes 400, k8s.io/apiserver/pkg/admission/plugin/webhook/errors ``ToStatusErr``).
    ``throttled_requests``: requests get 429 TooManyRequests with ``Retry-After``, what API
    Priority and Fairness answers when a flow's queue is full.
    ``error_fraction``: that share of resource requests fails with one of ``error_kinds`` (see
    ``ERROR_KINDS``), drawn from a random generator reseeded by ``seed`` for repeatable runs.
    ``reject_writes_until``: until then (``time.monotonic()``), every write gets 500 with etcd's
    "request timed out", what the apiserver answers while etcd has no quorum or leader; reads
    are served from the watch cache as before. ``reject_next_writes_seconds`` arms such an
    outage to begin at the next write (that write is the first rejected), so a test can put it
    where a client writes instead of guessing when that is; ``reject_writes_started_at`` (epoch
    seconds) and ``reject_writes_started_by`` (method and path) say when and on which write the
    outage began.
    ``write_latency_seconds``: every write waits that long before it is handled, what a client
    sees while etcd commits slowly (a disk under load); ``delayed_writes`` counts the writes
    waiting now, so a test can act while a client's write is in flight. A write whose client
    goes away while it waits is still handled and stored: kube-apiserver may or may not store a
    write whose client went away (it depends on whether etcd had it), and a client must cope
    with either.
    """

    webhook_failures: int = 0
    webhook_denials: int = 0
    denial_message: str = "configuration is invalid: rejected by policy"
    webhook: str = ISTIO_WEBHOOK
    webhook_groups: tuple[str, ...] = ISTIO_GROUPS
    throttled_requests: int = 0
    retry_after_seconds: int = 1
    error_fraction: float = 0.0
    error_kinds: tuple[str, ...] = ERROR_KINDS
    reject_writes_until: float = 0.0
    reject_next_writes_seconds: float = 0.0
    reject_writes_started_at: float | None = None
    reject_writes_started_by: str | None = None
    write_latency_seconds: float = 0.0
    delayed_writes: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def configure(self, body: Any) -> dict[str, Any]:
        """Set counters from a JSON object (``webhookFailures``, ``webhook``, ``webhookGroups``,
        ``throttledRequests``, ``retryAfterSeconds``); returns the new state."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the faults body must be a JSON object")
        with self._lock:
            for key, attr in (
                ("webhookFailures", "webhook_failures"),
                ("webhookDenials", "webhook_denials"),
                ("throttledRequests", "throttled_requests"),
                ("retryAfterSeconds", "retry_after_seconds"),
            ):
                if key in body:
                    value = body[key]
                    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                        raise ApiError(
                            400, "BadRequest", f"{key} must be an integer >= 0, got {value!r}"
                        )
                    setattr(self, attr, value)
            if "errorFraction" in body:
                fraction = body["errorFraction"]
                if (
                    isinstance(fraction, bool)
                    or not isinstance(fraction, (int, float))
                    or not 0 <= fraction <= 1
                ):
                    raise ApiError(
                        400, "BadRequest", f"errorFraction must be within 0..1, got {fraction!r}"
                    )
                self.error_fraction = float(fraction)
            if "errorKinds" in body:
                kinds = body["errorKinds"]
                if (
                    not isinstance(kinds, list)
                    or not kinds
                    or any(k not in ERROR_KINDS for k in kinds)
                ):
                    raise ApiError(
                        400,
                        "BadRequest",
                        f"errorKinds must be a non-empty list of {list(ERROR_KINDS)}, got {kinds!r}",
                    )
                self.error_kinds = tuple(kinds)
            if "seed" in body:
                self._rng.seed(body["seed"])
                self.injected.clear()
            for key in ("rejectWritesSeconds", "rejectNextWritesSeconds"):
                seconds = body.get(key, 0)
                if (
                    isinstance(seconds, bool)
                    or not isinstance(seconds, (int, float))
                    or not 0 <= seconds <= 3600
                ):
                    raise ApiError(
                        400,
                        "BadRequest",
                        f"{key} must be a number of seconds within 0..3600, got {seconds!r}",
                    )
            if "rejectWritesSeconds" in body:
                seconds = body["rejectWritesSeconds"]
                self.reject_writes_until = time.monotonic() + seconds if seconds else 0.0
                self.reject_next_writes_seconds = 0.0
                self.reject_writes_started_at = time.time() if seconds else None
                self.reject_writes_started_by = None
            if "rejectNextWritesSeconds" in body:
                self.reject_next_writes_seconds = float(body["rejectNextWritesSeconds"])
                self.reject_writes_until = 0.0
                self.reject_writes_started_at = None
                self.reject_writes_started_by = None
            if "writeLatencySeconds" in body:
                latency = body["writeLatencySeconds"]
                if (
                    isinstance(latency, bool)
                    or not isinstance(latency, (int, float))
                    or not 0 <= latency <= 60
                ):
                    raise ApiError(
                        400,
                        "BadRequest",
                        f"writeLatencySeconds must be a number of seconds within 0..60, got {latency!r}",
                    )
                self.write_latency_seconds = float(latency)
            if "denialMessage" in body:
                self.denial_message = str(body["denialMessage"])
            if "webhook" in body:
                self.webhook = str(body["webhook"])
            if "webhookGroups" in body:
                self.webhook_groups = tuple(str(g) for g in body["webhookGroups"])
            return self.state()

    def state(self) -> dict[str, Any]:
        remaining = max(0.0, self.reject_writes_until - time.monotonic())
        return {
            "errorFraction": self.error_fraction,
            "errorKinds": list(self.error_kinds),
            "rejectWritesRemainingSeconds": round(remaining, 3),
            "rejectNextWritesSeconds": self.reject_next_writes_seconds,
            "rejectWritesStartedAt": self.reject_writes_started_at,
            "rejectWritesStartedBy": self.reject_writes_started_by,
            "writeLatencySeconds": self.write_latency_seconds,
            "delayedWrites": self.delayed_writes,
            "injected": dict(self.injected),
            "webhookFailures": self.webhook_failures,
            "webhookDenials": self.webhook_denials,
            "denialMessage": self.denial_message,
            "webhook": self.webhook,
            "webhookGroups": list(self.webhook_groups),
            "throttledRequests": self.throttled_requests,
            "retryAfterSeconds": self.retry_after_seconds,
        }

    def inject(self, method: str, target: str = "") -> bool:
        """Fail this resource request (``method`` on ``target``, its path) as configured: raise
        ApiError (500, 429) or ResetConnection, or return True when a write is to be stored and
        its reply dropped."""
        write = method in WRITE_METHODS
        with self._lock:
            if write and self.reject_next_writes_seconds:
                self.reject_writes_until = time.monotonic() + self.reject_next_writes_seconds
                self.reject_writes_started_at = time.time()
                self.reject_writes_started_by = f"{method} {target}".strip()
                self.reject_next_writes_seconds = 0.0
            if write and time.monotonic() < self.reject_writes_until:
                kind: str | None = "reject-write"
            elif self.error_fraction and self._rng.random() < self.error_fraction:
                kind = self._rng.choice(self.error_kinds)
            else:
                kind = None
            if kind == "reset-after-write" and not write:
                kind = "reset"
            if kind is not None:
                self.injected[kind] = self.injected.get(kind, 0) + 1
            retry_after = self.retry_after_seconds
        if kind is None:
            return False
        if kind == "reject-write":
            raise ApiError(500, "", ETCD_TIMEOUT)
        if kind == "500":
            cause = "injected fault: the apiserver failed before storing anything"
            raise ApiError(
                500,
                "InternalError",
                f"Internal error occurred: {cause}",
                details={"causes": [{"message": cause}]},
            )
        if kind == "429":
            raise ApiError(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                details={"retryAfterSeconds": retry_after},
                headers={"Retry-After": str(retry_after)},
            )
        if kind == "reset-after-write":
            return True
        raise ResetConnection()

    async def delay_write(self, method: str) -> None:
        """Hold a write for ``write_latency_seconds`` (counted in ``delayed_writes`` meanwhile)."""
        with self._lock:
            latency = self.write_latency_seconds if method in WRITE_METHODS else 0.0
            if latency:
                self.delayed_writes += 1
        if not latency:
            return
        try:
            await asyncio.sleep(latency)
        finally:
            with self._lock:
                self.delayed_writes -= 1

    def throttle(self) -> None:
        """Raise 429 while throttled requests remain."""
        with self._lock:
            if self.throttled_requests <= 0:
                return
            self.throttled_requests -= 1
            seconds = self.retry_after_seconds
        raise ApiError(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            details={"retryAfterSeconds": seconds},
            headers={"Retry-After": str(seconds)},
        )

    def call_webhook(self, path: ResourcePath) -> None:
        """Deny (400) or fail (500) the write while denials or failures remain and the webhook intercepts it."""
        if path.subresource is not None or path.rtype.group not in self.webhook_groups:
            return
        with self._lock:
            webhook = self.webhook
            if self.webhook_denials > 0:
                self.webhook_denials -= 1
                raise ApiError(
                    400,
                    "BadRequest",
                    f'admission webhook "{webhook}" denied the request: {self.denial_message}',
                )
            if self.webhook_failures <= 0:
                return
            self.webhook_failures -= 1
        cause = (
            f'failed calling webhook "{webhook}": failed to call webhook: Post '
            f'"https://istiod.istio-system.svc:443/validate?timeout=10s": '
            f"dial tcp 10.96.0.15:443: connect: connection refused"
        )
        raise ApiError(
            500,
            "InternalError",
            f"Internal error occurred: {cause}",
            details={"causes": [{"message": cause}]},
        )
