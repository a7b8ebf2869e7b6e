"""Faults the local API server can be told to inject, each answered as a real cluster answers it: an unreachable validating webhook, and throttling."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from airflow_canary.local.apiserver.request import ApiError, ResourcePath

#: Istio's validating webhook and the groups it intercepts (istiod's ValidatingWebhookConfiguration).
ISTIO_WEBHOOK = "validation.istio.io"
ISTIO_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io")


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
    """

    webhook_failures: int = 0
    webhook_denials: int = 0
    denial_message: str = "configuration is invalid: rejected by policy"
    webhook: str = ISTIO_WEBHOOK
    webhook_groups: tuple[str, ...] = ISTIO_GROUPS
    throttled_requests: int = 0
    retry_after_seconds: int = 1
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
            if "denialMessage" in body:
                self.denial_message = str(body["denialMessage"])
            if "webhook" in body:
                self.webhook = str(body["webhook"])
            if "webhookGroups" in body:
                self.webhook_groups = tuple(str(g) for g in body["webhookGroups"])
            return self.state()

    def state(self) -> dict[str, Any]:
        return {
            "webhookFailures": self.webhook_failures,
            "webhookDenials": self.webhook_denials,
            "denialMessage": self.denial_message,
            "webhook": self.webhook,
            "webhookGroups": list(self.webhook_groups),
            "throttledRequests": self.throttled_requests,
            "retryAfterSeconds": self.retry_after_seconds,
        }

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
