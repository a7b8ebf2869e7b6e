"""Istio and Kubernetes API access for traffic steps: versioned reads, conflict-safe writes, retries."""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import cached_property, partial
from typing import Any

import tenacity
from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.sdk import BaseHook
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from airflow_canary.hooks import kubernetes_client
from airflow_canary.hooks.kubernetes_client import SharedKubernetesClient
from airflow_canary.routing import (
    ROOT_NAMESPACE,
    ResolvedDestinationRule,
    RouteTarget,
    find_destination_rule,
    lookup_namespaces,
    product_header_routes,
    read_split,
    rollback,
)
from airflow_canary.routing.router import (
    IstioRouter,
    RouteObject,
    Router,
    RouterKind,
    route_parameter,
)

_log = logging.getLogger(__name__)

GROUP = "networking.istio.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
#: Versions tried in order; Istio serves the same objects under each of them.
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")

Document = dict[str, Any]
Transform = Callable[[Document], Document]

#: Statuses worth retrying: the server asked us to wait (429), or failed before storing anything
#: (500, e.g. a validating webhook with ``failurePolicy: Fail`` that cannot be reached; 502-504).
#: A retried write carries the resourceVersion it was computed from, so it can never apply twice.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The longest ``Retry-After`` honoured; a longer one is cut to this.
MAX_RETRY_AFTER_SECONDS = 30.0
#: Field manager named in every write (``managedFields`` record it as the owner of what it sets).
FIELD_MANAGER = "airflow-canary"
#: Sent with every write: our manager name, and strict field validation so a misspelled field is
#: an error (HTTP 400/422 naming the field) instead of silently dropped.
WRITE_OPTIONS: dict[str, str] = {"field_manager": FIELD_MANAGER, "field_validation": "Strict"}
#: Field manager of replica counts the product sets (as an autoscaler would): a later apply of a
#: manifest that sets ``replicas`` then names it in its conflict instead of silently undoing it.
SCALE_FIELD_MANAGER = "airflow-canary-scale"
#: The content type of a server-side apply PATCH.
APPLY_PATCH = "application/apply-patch+yaml"


class IstioHookError(RuntimeError):
    """A Kubernetes API request for traffic control failed; the message says what and where."""


class IstioNotFoundError(IstioHookError, LookupError):
    """The named object does not exist in the namespace."""


class IstioConflictError(IstioHookError):
    """Concurrent writers kept changing the object; every read-modify-replace attempt lost."""


class IstioUnavailableError(IstioHookError, ConnectionError):
    """The Kubernetes API could not be reached within the retry budget.

    A read that gave up wrote nothing. A write whose last attempt lost its connection may have
    been stored before the connection dropped (the client cannot know): the message says so,
    and the object must be read to see which state it is in. The product's writes carry a
    ``resourceVersion``, so such a write landed whole or not at all.
    """


class IstioApiError(IstioHookError):
    """The Kubernetes API rejected a request (validation, permissions, unserved kinds)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class IstioForbiddenError(IstioApiError, PermissionError):
    """RBAC denied the connection's user a verb on a resource (HTTP 403 Forbidden)."""


class IstioAdmissionError(IstioApiError):
    """An admission webhook (e.g. Istio's ``validation.istio.io``) denied the object."""


class IstioApplyConflictError(IstioApiError):
    """Server-side apply would change fields another field manager owns (HTTP 409)."""


class IstioInvalidError(IstioApiError, ValueError):
    """The API server found the object invalid (HTTP 422), or it has fields the schema lacks."""


class IstioKind(str, Enum):
    """The Istio kinds the product reads and writes, by their plural resource name."""

    VIRTUAL_SERVICE = "virtualservices"
    DESTINATION_RULE = "destinationrules"

    @property
    def kind(self) -> str:
        return {"virtualservices": "VirtualService", "destinationrules": "DestinationRule"}[
            self.value
        ]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: conflict re-reads, and connection retries within a total deadline.

    :param conflict_attempts: read-modify-replace attempts when a write meets HTTP 409 Conflict
        (another writer changed the object), >= 1
    :param conflict_backoff_seconds: base of the full-jitter pause between conflict attempts,
        seconds (attempt ``k`` waits up to ``base * 2**k``)
    :param connect_attempts: attempts of one API call on connection errors and HTTP 429/500/
        502/503/504, >= 1
    :param connect_backoff_seconds: multiplier of the exponential backoff between connection
        attempts, seconds (a server's ``Retry-After`` takes precedence, cut to 30 s)
    :param connect_deadline_seconds: no further connection attempt starts after this many
        seconds from the first
    :raises ValueError: for fewer than one attempt
    """

    conflict_attempts: int = 5
    conflict_backoff_seconds: float = 0.02
    connect_attempts: int = 5
    connect_backoff_seconds: float = 0.2
    connect_deadline_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.conflict_attempts < 1 or self.connect_attempts < 1:
            raise ValueError(
                f"attempts must be at least 1, got conflict_attempts={self.conflict_attempts}, "
                f"connect_attempts={self.connect_attempts}"
            )

    def conflict_delay(self, attempt: int, rng: random.Random) -> float:
        # Full jitter: writers that collided once should not collide again in lockstep.
        return rng.uniform(0, self.conflict_backoff_seconds * 2**attempt)


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of a read-modify-replace: the object before and after, and how many tries it took."""

    before: Document
    after: Document
    changed: bool
    attempts: int


# --- The read-transform-replace loop, written once as steps both drivers execute -------------


@dataclass(frozen=True)
class _Read:
    pass


@dataclass(frozen=True)
class _Replace:
    body: Document


@dataclass(frozen=True)
class _Pause:
    seconds: float


_Step = _Read | _Replace | _Pause
#: What a driver sends back for a `_Replace` that hit 409 Conflict.
_CONFLICT = object()


def _update_steps(
    what: str, transform: Transform, policy: RetryPolicy, rng: random.Random
) -> Generator[_Step, Any, UpdateResult]:
    """Read, transform, and replace with the read's resourceVersion; on conflict start over.

    The transformation is pure, so re-applying it to a fresh read is the whole merge strategy:
    another writer's change survives because we transform their version, not ours.
    """
    first: Document | None = None
    for attempt in range(1, policy.conflict_attempts + 1):
        current: Document = yield _Read()
        first = current if first is None else first
        desired = transform(copy.deepcopy(current))
        if desired == current:
            # After a conflict, the object may already hold our change: a retried write whose
            # first try was stored although its answer was lost (a 504, say).
            return UpdateResult(
                before=first, after=current, changed=current != first, attempts=attempt
            )
        body = copy.deepcopy(desired)
        body.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        written = yield _Replace(body)
        if written is not _CONFLICT:
            return UpdateResult(before=current, after=written, changed=True, attempts=attempt)
        if attempt < policy.conflict_attempts:
            yield _Pause(policy.conflict_delay(attempt, rng))
    raise IstioConflictError(
        f"{what} was changed by other writers during each of {policy.conflict_attempts} "
        f"read-modify-replace attempts; nothing was written by this update, retry it later"
    )


def _retry_after(exc: BaseException | None) -> float | None:
    """The server's ``Retry-After`` (seconds) on a 429/503, if it sent one."""
    headers = getattr(exc, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


class WaitRetryAfter(tenacity.wait.wait_base):
    """Wait what the server asked for (``Retry-After``), else exponential backoff with full jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._backoff = tenacity.wait_random_exponential(
            multiplier=policy.connect_backoff_seconds, max=2.0
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        after = _retry_after(outcome.exception()) if outcome is not None else None
        if after is not None:
            return min(after, MAX_RETRY_AFTER_SECONDS)
        return float(self._backoff(retry_state))


def _retry_options(
    policy: RetryPolicy, transient: Callable[[BaseException], bool], log: Any
) -> dict[str, Any]:
    """tenacity options: retry ``transient`` errors within the policy's attempts and deadline."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "Kubernetes API call failed (%s); retrying in %.2fs",
            _describe_error(error) if error is not None else "?",
            state.upcoming_sleep,
        )

    return {
        "retry": tenacity.retry_if_exception(transient),
        "wait": WaitRetryAfter(policy),
        "stop": tenacity.stop_after_attempt(policy.connect_attempts)
        | tenacity.stop_before_delay(policy.connect_deadline_seconds),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def _gave_up(
    host: str, attempts: int, elapsed: float, exc: BaseException, *, write: bool = False
) -> IstioUnavailableError:
    """The error for a call that used up its retry budget on transient failures.

    Whether anything was written: a read writes nothing; a write answered with an HTTP status
    (500, 429, 503, 504) was not stored; a write whose connection failed may have been
    stored before the reply was lost (a dropped connection after the API server committed it).
    """
    if getattr(exc, "status", None) is None:
        outcome = (
            "the last write may or may not have been stored (its connection failed before a "
            "reply): read the object to see its state"
            if write
            else "nothing was written"
        )
        return IstioUnavailableError(
            f"Kubernetes API at {host} is unreachable after {attempts} attempts over "
            f"{elapsed:.1f}s: {_short_error(exc)}; {outcome}. Check that the "
            f"API server is running and that the kubernetes connection points at it"
        )
    return IstioUnavailableError(
        f"Kubernetes API at {host} kept failing: {attempts} attempts over {elapsed:.1f}s, "
        f"last error {_describe_error(exc)}"
    )


def _describe_error(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status is None:
        return _short_error(exc)
    return f"HTTP {status}: {_status_message(exc)}"


def _short_error(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason if reason is not None else exc)
    return text if len(text) < 300 else text[:300] + "..."


def _status_message(exc: Any) -> str:
    """The human message of a Kubernetes Status body, or the raw reason."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return body.strip()[:300]
        if isinstance(parsed, Mapping) and parsed.get("message"):
            return str(parsed["message"])
    return str(getattr(exc, "reason", "") or exc)


def _not_found(kind: str, name: str, namespace: str) -> IstioNotFoundError:
    return IstioNotFoundError(f"{kind} {name!r} not found in namespace {namespace!r}")


def _route_not_found(
    obj: RouteObject, name: str, namespace: str, exc: Any
) -> IstioNotFoundError | IstioApiError:
    """A 404 on a route object: the object is missing, or the API serves no such kind at all.

    kube-apiserver tells them apart in the Status body: a missing object's ``details`` name it,
    a path no API serves has none ("the server could not find the requested resource").
    """
    details = _status_body(exc).get("details") or {}
    if details.get("name") or not _status_body(exc):
        return _not_found(obj.kind, name, namespace)
    return IstioApiError(
        f"the Kubernetes API serves no {obj.kind} in {obj.group}/{obj.versions[0]} "
        f"({_status_message(exc)}), so {obj.kind} {name!r} in namespace {namespace!r} cannot "
        f"exist: apply the CRD {obj.plural}.{obj.group} (for Gateway API, its standard channel)",
        404,
    )


_RBAC_DENIAL = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)" in API group '
    r'"[^"]*" (?:in the namespace "(?P<namespace>[^"]+)"|at the cluster scope)'
)


def _status_body(exc: Any) -> Mapping[str, Any]:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if isinstance(body, str) and body else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, Mapping) else {}


def _written_part(obj: Mapping[str, Any]) -> Document:
    """What an apply can change: the object without status, resourceVersion and the times of
    its managedFields entries (both sides are the server's normalised form)."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = out.get("metadata") or {}
    meta.pop("resourceVersion", None)
    for entry in meta.get("managedFields") or []:
        if isinstance(entry, dict):
            entry.pop("time", None)
    return out


def _apply_conflict(what: str, exc: Any) -> IstioApplyConflictError:
    causes = (_status_body(exc).get("details") or {}).get("causes") or []
    owners = sorted(
        {
            f"{c.get('field')} (owned by {str(c.get('message', '')).split(' using ')[0].removeprefix('conflict with ')})"
            for c in causes
            if isinstance(c, Mapping)
        }
    )
    return IstioApplyConflictError(
        f"cannot apply {what}: other field managers own fields the manifest changes: "
        f"{', '.join(owners) or _status_message(exc)}. Remove those fields from the manifest "
        f"to leave them to their owners, or apply with force_conflicts=True to take them over",
        409,
    )


def _api_error(action: str, exc: Any) -> IstioApiError:
    """The product's error for a refused request: RBAC denial, admission denial, invalid object
    or any other refusal, each with its own message."""
    status = getattr(exc, "status", None)
    message = _status_message(exc)
    if "admission webhook" in message and "denied the request" in message:
        return IstioAdmissionError(f"admission denied: cannot {action}: {message}", status)
    if status == 403:
        denial = _RBAC_DENIAL.search(message)
        if denial is None:
            return IstioForbiddenError(f"forbidden: cannot {action}: {message}", status)
        where = (
            f"in namespace {denial['namespace']}" if denial["namespace"] else "at the cluster scope"
        )
        return IstioForbiddenError(
            f"forbidden: user {denial['user']} cannot {denial['verb']} {denial['resource']} "
            f"{where}; grant the kubernetes connection's user that verb (RBAC), nothing was "
            f"written by this request",
            status,
        )
    strict = ("strict decoding error", "field not declared in schema")
    if status == 422 or (status == 400 and any(text in message for text in strict)):
        causes = (_status_body(exc).get("details") or {}).get("causes") or []
        fields = [str(c.get("field")) for c in causes if isinstance(c, Mapping) and c.get("field")]
        where = f" (fields: {', '.join(fields)})" if fields else ""
        return IstioInvalidError(f"invalid object: cannot {action}{where}: {message}", status)
    return IstioApiError(f"Kubernetes API refused to {action} (HTTP {status}): {message}", status)


def _resource_names(resource_list: Any) -> set[str]:
    resources = getattr(resource_list, "resources", None) or []
    return {getattr(r, "name", None) or "" for r in resources}


def _unserved(kind: IstioKind) -> IstioApiError:
    return IstioApiError(
        f"the Kubernetes API serves no {kind.kind} in {GROUP} (tried "
        f"{', '.join(ISTIO_VERSIONS)}); install Istio or apply its CRDs",
        404,
    )


@dataclass(frozen=True)
class _Resource:
    """Where the API serves a kind of custom object, and the kind's name for messages."""

    group: str
    version: str
    plural: str
    kind: str

    @classmethod
    def istio(cls, kind: IstioKind, version: str) -> _Resource:
        return cls(GROUP, version, kind.value, kind.kind)

    @classmethod
    def route(cls, obj: RouteObject) -> _Resource:
        return cls(obj.group, obj.versions[0], obj.plural, obj.kind)

    def where(self, name: str, namespace: str) -> str:
        return f"{self.kind} {name!r} in {namespace!r}"


#: Builds the error for a 404 on an object from the API's exception (sync or async client).
NotFound = Callable[[Any], IstioHookError]


def _missing_istio_object(kind: IstioKind, name: str, namespace: str) -> NotFound:
    return lambda exc: _not_found(kind.kind, name, namespace)


def _missing_route(obj: RouteObject, name: str, namespace: str) -> NotFound:
    return lambda exc: _route_not_found(obj, name, namespace, exc)


def _refusal(exc: Any, action: str, not_found: NotFound) -> IstioHookError:
    """The product's error for an API exception of either client (both carry ``status``)."""
    if getattr(exc, "status", None) == 404:
        return not_found(exc)
    return _api_error(action, exc)


def _no_destination_rule(
    host: str, namespaces: list[str], unreadable: list[str]
) -> IstioNotFoundError:
    note = f"; not readable: {'; '.join(unreadable)}" if unreadable else ""
    return IstioNotFoundError(
        f"no DestinationRule for host {host!r} is visible from namespace {namespaces[0]!r}: "
        f"searched {', '.join(repr(n) for n in namespaces)} in Istio's order (the "
        f"VirtualService's namespace, the service's, the root namespace; exportTo "
        f"respected){note}. Apply one defining the rollout's subsets"
    )


def traffic_result(
    namespace: str, target: RouteTarget, update: UpdateResult, **extra: Any
) -> dict[str, Any]:
    """The JSON-able XCom value of a traffic step (docs/architecture.md, "XCom values").

    ``split`` is the headline split (the route sending the canary the most), ``routes`` every
    route of the rollout's subsets with its own split.
    """
    after = update.after
    split = read_split(after, target)
    return {
        "virtual_service": (after.get("metadata") or {}).get("name"),
        "namespace": namespace,
        "split": split.as_dict(),
        "routes": split.routes_as_list(),
        "header_routes": [route.as_dict() for route in product_header_routes(after)],
        "changed": update.changed,
        "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        **extra,
    }


def route_result(
    router: Router, name: str, namespace: str, update: UpdateResult, **extra: Any
) -> dict[str, Any]:
    """The XCom value of a traffic step on either router.

    Istio: exactly ``traffic_result``. Gateway API: the same keys, with ``http_route`` (the
    HTTPRoute's name) and ``router`` in place of ``virtual_service``, and the split keyed by
    Service.
    """
    if isinstance(router, IstioRouter):
        return traffic_result(namespace, router.target, update, **extra)
    return {
        route_parameter(router.kind): name,
        "router": router.kind.value,
        "namespace": namespace,
        "split": router.read_split(update.after).as_dict(),
        "header_routes": [
            {**route.as_dict(), "service": route.subset}
            for route in router.header_routes(update.after)
        ],
        "changed": update.changed,
        "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        **extra,
    }


# --- Sync hook ---------------------------------------------------------------------------------


class IstioHook(BaseHook):
    """Reads and writes Istio traffic objects, Deployments, Services and Pods.

    Connection handling (kubeconfig path or content, in-cluster, context) is the cncf-kubernetes
    provider's ``KubernetesHook``; this hook adds Istio's version negotiation, conflict-safe
    replaces and bounded retries on top of the ``ApiClient`` it returns. Nothing is read when the
    hook is built: the connection is looked up on the first API call.

    :param kubernetes_conn_id: id of an Airflow connection of type ``kubernetes`` (the
        cncf-kubernetes provider's: kubeconfig path or content, in-cluster, context); a missing
        connection raises Airflow's ``AirflowNotFoundException`` on the first call
    :param retry_policy: how hard each call tries: read-modify-replace attempts on HTTP 409
        Conflict, and connection attempts on 429/5xx/connection errors within a deadline in
        seconds (:class:`RetryPolicy`; default 5 conflict attempts, 5 connection attempts,
        15 s). Past the budget a call raises :class:`IstioConflictError` or
        :class:`IstioUnavailableError`; every other API error raises a subclass of
        :class:`IstioApiError` naming the object and the server's message.
    """

    conn_name_attr = "kubernetes_conn_id"
    default_conn_name = "kubernetes_default"
    conn_type = "kubernetes"
    hook_name = "Istio (Kubernetes connection)"

    def __init__(
        self,
        *,
        kubernetes_conn_id: str = default_conn_name,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.kubernetes_conn_id = kubernetes_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._versions: dict[IstioKind, str] = {}
        self._rng = random.Random()

    @cached_property
    def kubernetes_hook(self) -> KubernetesHook:
        # A private Configuration per hook, so concurrent hooks never share the process-global
        # default; the provider's explicit in-cluster branch ignores a passed one, so leave it.
        # The provider's own field accessor also reads the pre-2.3 "extra__kubernetes__" spelling.
        in_cluster = KubernetesHook(conn_id=self.kubernetes_conn_id)._get_field("in_cluster")
        configuration = None
        if not in_cluster:
            configuration = k8s.Configuration()
            # One retry layer with one budget (tenacity, in _call): urllib3 would otherwise retry
            # 429/503 answers carrying Retry-After on its own, inside each of our attempts.
            configuration.retries = 0
        return KubernetesHook(conn_id=self.kubernetes_conn_id, client_configuration=configuration)

    @cached_property
    def api_client(self) -> k8s.ApiClient:
        return self.kubernetes_hook.api_client

    @cached_property
    def custom_objects(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api_client)

    @cached_property
    def core_v1(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    @cached_property
    def apps_v1(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api_client)

    def get_conn(self) -> k8s.ApiClient:
        return self.api_client

    # Calls and retries

    def _call(self, fn: Callable[[], Any], *, write: bool = False) -> Any:
        """Run one API call, retrying connection failures and transient statuses in budget
        (tenacity; ``Retry-After`` honoured); past the budget, IstioUnavailableError names the
        last error and, for a ``write``, whether it may have been stored."""

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, ApiException):
                return exc.status in RETRY_STATUSES
            return isinstance(exc, (Urllib3HTTPError, OSError))

        retrying = tenacity.Retrying(**_retry_options(self.retry_policy, transient, _log))
        started = time.monotonic()
        try:
            return retrying(fn)
        except Exception as exc:
            if not transient(exc):
                raise
            attempts = int(retrying.statistics.get("attempt_number", 1))
            host = self.api_client.configuration.host
            elapsed = time.monotonic() - started
            raise _gave_up(host, attempts, elapsed, exc, write=write) from exc

    def _raw(self, fn: Callable[..., Any], *args: Any, write: bool = False, **kwargs: Any) -> Any:
        """A typed-API call returning the server's JSON as a dict, not a generated model."""
        response = self._call(lambda: fn(*args, _preload_content=False, **kwargs), write=write)
        return json.loads(response.data)

    def _run(
        self,
        steps: Generator[_Step, Any, UpdateResult],
        read: Callable[[], Document],
        replace: Callable[[Document], Document],
    ) -> UpdateResult:
        try:
            step = next(steps)
            while True:
                reply: Any = None
                if isinstance(step, _Read):
                    reply = read()
                elif isinstance(step, _Replace):
                    try:
                        reply = replace(step.body)
                    except ApiException as exc:
                        if exc.status != 409:
                            raise
                        reply = _CONFLICT
                else:
                    time.sleep(step.seconds)
                step = steps.send(reply)
        except StopIteration as done:
            result: UpdateResult = done.value
            return result

    # Istio objects

    def served_version(self, kind: IstioKind) -> str:
        """The first of v1, v1beta1, v1alpha3 in which the API server serves ``kind``."""
        if kind not in self._versions:
            for version in ISTIO_VERSIONS:
                try:
                    resources = self._call(
                        partial(self.custom_objects.get_api_resources, GROUP, version)
                    )
                except ApiException as exc:
                    if exc.status == 404:
                        continue
                    raise _api_error(f"discover {GROUP}/{version}", exc) from exc
                if kind.value in _resource_names(resources):
                    self._versions[kind] = version
                    break
            else:
                raise _unserved(kind)
        return self._versions[kind]

    def get_istio_object(self, kind: IstioKind, name: str, namespace: str) -> Document:
        resource = _Resource.istio(kind, self.served_version(kind))
        return self._get_custom(
            resource, name, namespace, _missing_istio_object(kind, name, namespace)
        )

    def _get_custom(
        self, resource: _Resource, name: str, namespace: str, not_found: NotFound
    ) -> Document:
        r = resource
        try:
            found: Document = self._call(
                lambda: self.custom_objects.get_namespaced_custom_object(
                    r.group, r.version, namespace, r.plural, name
                )
            )
        except ApiException as exc:
            raise _refusal(exc, f"read {r.where(name, namespace)}", not_found) from exc
        return found

    def _update_custom(
        self,
        resource: _Resource,
        name: str,
        namespace: str,
        transform: Transform,
        not_found: NotFound,
    ) -> UpdateResult:
        """Apply the pure ``transform`` by read-modify-replace; no write if nothing changes."""
        r = resource

        def replace(body: Document) -> Document:
            try:
                written: Document = self._call(
                    lambda: self.custom_objects.replace_namespaced_custom_object(
                        r.group, r.version, namespace, r.plural, name, body, **WRITE_OPTIONS
                    ),
                    write=True,
                )
            except ApiException as exc:
                if exc.status == 409:
                    raise
                raise _refusal(exc, f"replace {r.where(name, namespace)}", not_found) from exc
            return written

        what = f"{r.kind} {name!r} in namespace {namespace!r}"
        steps = _update_steps(what, transform, self.retry_policy, self._rng)
        return self._run(steps, lambda: self._get_custom(r, name, namespace, not_found), replace)

    def list_istio_objects(self, kind: IstioKind, namespace: str) -> list[Document]:
        version = self.served_version(kind)
        try:
            listed = self._call(
                lambda: self.custom_objects.list_namespaced_custom_object(
                    GROUP, version, namespace, kind.value
                )
            )
        except ApiException as exc:
            raise _api_error(f"list {kind.kind} objects in {namespace!r}", exc) from exc
        return list(listed.get("items") or [])

    def get_virtual_service(self, name: str, namespace: str = "default") -> Document:
        return self.get_istio_object(IstioKind.VIRTUAL_SERVICE, name, namespace)

    def get_destination_rule(self, name: str, namespace: str = "default") -> Document:
        return self.get_istio_object(IstioKind.DESTINATION_RULE, name, namespace)

    def find_destination_rule(
        self, host: str, client_namespace: str, root_namespace: str = ROOT_NAMESPACE
    ) -> ResolvedDestinationRule:
        """The DestinationRule Istio applies to ``host`` for clients in ``client_namespace``.

        Lists DestinationRules in Istio's lookup order (``routing.lookup_namespaces``) and picks
        as ``routing.find_destination_rule`` does. A namespace this connection may not list is
        skipped and named in the not-found error. Raises IstioNotFoundError when none applies.
        """
        namespaces = lookup_namespaces(host, client_namespace, root_namespace)
        rules: list[Document] = []
        unreadable: list[str] = []
        for namespace in namespaces:
            try:
                rules += self.list_istio_objects(IstioKind.DESTINATION_RULE, namespace)
            except IstioApiError as err:
                if namespace == client_namespace or err.status not in (401, 403, 404):
                    raise
                unreadable.append(f"{namespace!r} ({err})")
                continue
            found = find_destination_rule(host, client_namespace, rules, root_namespace)
            if found is not None:
                return found
        raise _no_destination_rule(host, namespaces, unreadable)

    def update_istio_object(
        self, kind: IstioKind, name: str, namespace: str, transform: Transform
    ) -> UpdateResult:
        """Apply the pure ``transform`` by read-modify-replace; no write if nothing changes."""
        resource = _Resource.istio(kind, self.served_version(kind))
        missing = _missing_istio_object(kind, name, namespace)
        return self._update_custom(resource, name, namespace, transform, missing)

    def update_virtual_service(
        self, name: str, namespace: str, transform: Transform
    ) -> UpdateResult:
        return self.update_istio_object(IstioKind.VIRTUAL_SERVICE, name, namespace, transform)

    # Route objects of either router (the documents the router seam transforms)

    def get_route(self, router: Router, name: str, namespace: str) -> Document:
        """The route object ``router`` acts on: a VirtualService or a Gateway API HTTPRoute."""
        if router.kind is RouterKind.ISTIO:
            return self.get_virtual_service(name, namespace)
        obj = router.route_object
        return self._get_custom(
            _Resource.route(obj), name, namespace, _missing_route(obj, name, namespace)
        )

    def update_route(
        self, router: Router, name: str, namespace: str, transform: Transform
    ) -> UpdateResult:
        """Apply the pure ``transform`` to the route object by read-modify-replace."""
        if router.kind is RouterKind.ISTIO:
            return self.update_virtual_service(name, namespace, transform)
        obj = router.route_object
        missing = _missing_route(obj, name, namespace)
        return self._update_custom(_Resource.route(obj), name, namespace, transform, missing)

    def list_reference_grants(self, namespace: str) -> list[Document]:
        """Gateway API ReferenceGrants of ``namespace`` (v1, else v1beta1); [] when none are served."""
        for version in ("v1", "v1beta1"):
            try:
                listed = self._call(
                    lambda v=version: self.custom_objects.list_namespaced_custom_object(  # type: ignore[misc]
                        GATEWAY_GROUP, v, namespace, "referencegrants"
                    )
                )
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise _api_error(f"list ReferenceGrants in {namespace!r}", exc) from exc
            return list(listed.get("items") or [])
        return []

    def get_service(self, name: str, namespace: str = "default") -> Document:
        try:
            found: Document = self._raw(self.core_v1.read_namespaced_service, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise _not_found("Service", name, namespace) from exc
            raise _api_error(f"read Service {name!r} in {namespace!r}", exc) from exc
        return found

    # Workloads

    def get_deployment(self, name: str, namespace: str = "default") -> Document:
        try:
            found: Document = self._raw(self.apps_v1.read_namespaced_deployment, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise _not_found("Deployment", name, namespace) from exc
            raise _api_error(f"read Deployment {name!r} in {namespace!r}", exc) from exc
        return found

    def scale_deployment(self, name: str, namespace: str, replicas: int) -> UpdateResult:
        """Set ``spec.replicas``; a Deployment already at that size is not written."""
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas must be a non-negative integer, got {replicas!r}")

        def scaled(deployment: Document) -> Document:
            deployment["spec"]["replicas"] = replicas
            return deployment

        def replace(body: Document) -> Document:
            try:
                written: Document = self._raw(
                    self.apps_v1.replace_namespaced_deployment,
                    name,
                    namespace,
                    body,
                    write=True,
                    field_manager=SCALE_FIELD_MANAGER,
                    field_validation="Strict",
                )
            except ApiException as exc:
                if exc.status == 409:
                    raise
                if exc.status == 404:
                    raise _not_found("Deployment", name, namespace) from exc
                raise _api_error(f"replace Deployment {name!r} in {namespace!r}", exc) from exc
            return written

        what = f"Deployment {name!r} in namespace {namespace!r}"
        steps = _update_steps(what, scaled, self.retry_policy, self._rng)
        return self._run(steps, lambda: self.get_deployment(name, namespace), replace)

    def list_pods(self, namespace: str = "default", label_selector: str = "") -> list[Document]:
        try:
            listed = self._raw(
                self.core_v1.list_namespaced_pod, namespace, label_selector=label_selector
            )
        except ApiException as exc:
            raise _api_error(f"list Pods in {namespace!r}", exc) from exc
        return list(listed.get("items") or [])

    # Generic apply

    def apply_object(
        self,
        obj: Mapping[str, Any],
        namespace: str | None = None,
        *,
        force_conflicts: bool = False,
    ) -> UpdateResult:
        """Server-side apply ``obj`` under field manager ``airflow-canary``.

        Handles Services, Deployments, DestinationRules and VirtualServices. Only the fields the
        manifest sets are written and owned: a Deployment manifest without ``replicas`` leaves an
        autoscaler's count alone, labels and annotations other tools set stay, and fields this
        manager applied before but the manifest no longer sets are removed. The server validates
        strictly (an unknown field is an IstioInvalidError naming its path). ``changed`` is True
        when the object's resourceVersion moved (the server stores nothing for an apply that
        changes nothing).

        Raises:
            IstioApplyConflictError: the manifest sets a field to a new value while another
                field manager owns it, and ``force_conflicts`` is False.
        """
        kind = obj.get("kind")
        metadata = obj.get("metadata") or {}
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"object to apply has no metadata.name: kind={kind!r}")
        ns = metadata.get("namespace") or namespace or "default"
        read, apply, api_version = self._object_api(obj, name, ns)
        try:
            before: Document = self._call(read)
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(f"read {kind} {name!r} in {ns!r}", exc) from exc
            before = {}
        body = copy.deepcopy(dict(obj))
        body["apiVersion"] = api_version
        body.setdefault("metadata", {})["namespace"] = ns
        try:
            after: Document = self._call(lambda: apply(body, force_conflicts), write=True)
        except ApiException as exc:
            if exc.status == 409:
                raise _apply_conflict(f"{kind} {name!r} in namespace {ns!r}", exc) from exc
            raise _api_error(f"apply {kind} {name!r} in {ns!r}", exc) from exc
        rv_before = (before.get("metadata") or {}).get("resourceVersion")
        moved = rv_before != (after.get("metadata") or {}).get("resourceVersion")
        # The controller's status writes move resourceVersion too: only ours count.
        changed = moved and _written_part(before) != _written_part(after)
        return UpdateResult(before=before, after=after, changed=changed, attempts=1)

    def _object_api(
        self, obj: Mapping[str, Any], name: str, ns: str
    ) -> tuple[Callable[[], Document], Callable[[Document, bool], Document], str]:
        """(read, apply(body, force), apiVersion) for the object's kind, each returning a dict."""
        kind = obj.get("kind")
        api_version = str(obj.get("apiVersion") or "")

        def raw(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Document:
            parsed: Document = json.loads(fn(*args, _preload_content=False, **kwargs).data)
            return parsed

        def applying(fn: Callable[..., Any], *args: Any) -> Callable[[Document, bool], Document]:
            return lambda body, force: raw(
                fn, *args, body, force=force, _content_type=APPLY_PATCH, **WRITE_OPTIONS
            )

        if kind == "Service" and api_version == "v1":
            return (
                lambda: raw(self.core_v1.read_namespaced_service, name, ns),
                applying(self.core_v1.patch_namespaced_service, name, ns),
                api_version,
            )
        if kind == "Deployment" and api_version == "apps/v1":
            return (
                lambda: raw(self.apps_v1.read_namespaced_deployment, name, ns),
                applying(self.apps_v1.patch_namespaced_deployment, name, ns),
                api_version,
            )
        istio_kinds = {k.kind: k for k in IstioKind}
        if kind in istio_kinds and api_version.startswith(GROUP + "/"):
            istio = istio_kinds[str(kind)]
            # Write in the manifest's own version when served; otherwise in the served one.
            version = api_version.split("/", 1)[1]
            try:
                self._call(lambda: self.custom_objects.get_api_resources(GROUP, version))
            except ApiException:
                version = self.served_version(istio)
            api = self.custom_objects
            return (
                lambda: api.get_namespaced_custom_object(GROUP, version, ns, istio.value, name),
                applying(api.patch_namespaced_custom_object, GROUP, version, ns, istio.value, name),
                f"{GROUP}/{version}",
            )
        raise ValueError(
            f"cannot apply {api_version} {kind} {name!r}: expected a v1 Service, an apps/v1 "
            f"Deployment, or a {GROUP} DestinationRule or VirtualService"
        )


# --- Async hook --------------------------------------------------------------------------------


class AsyncIstioHook:
    """Async twin of ``IstioHook`` for triggers: read, conflict-safe update, and rollback.

    Calls go through kubernetes_asyncio with the same retry budget and update steps as the
    sync hook, over the event loop's shared client for the connection
    (:mod:`airflow_canary.hooks.kubernetes_client`: configuration loading is the provider's
    ``AsyncKubernetesHook``): every hook of a triggerer process that uses the same connection
    shares one client and one discovery of Istio's served versions. Nothing is read when the
    hook is built; its first call takes a share, :meth:`aclose` (or leaving ``async with``)
    gives it back, and the last hook out closes the client. A hook never closed holds its
    share until its loop ends; ``asyncio.run()`` then closes the client.

    :param kubernetes_conn_id: id of an Airflow connection of type ``kubernetes``, as for
        :class:`IstioHook`
    :param retry_policy: conflict and connection retry budget (:class:`RetryPolicy`; default
        5 conflict attempts, 5 connection attempts within 15 s); past it a call raises
        :class:`IstioConflictError` or :class:`IstioUnavailableError`, other API errors a
        subclass of :class:`IstioApiError`
    """

    def __init__(
        self,
        *,
        kubernetes_conn_id: str = "kubernetes_default",
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.kubernetes_conn_id = kubernetes_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._rng = random.Random()
        self._client: SharedKubernetesClient | None = None

    def __repr__(self) -> str:
        return f"AsyncIstioHook(kubernetes_conn_id={self.kubernetes_conn_id!r})"

    async def __aenter__(self) -> AsyncIstioHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Give back this hook's share of the shared client; the last holder closes it."""
        held, self._client = self._client, None
        if held is not None:
            await kubernetes_client.release(held)

    async def _shared(self) -> SharedKubernetesClient:
        import asyncio

        held = self._client
        if held is None or held.closed or held.loop is not asyncio.get_running_loop():
            if held is not None:
                self._client = None
                await kubernetes_client.release(held)
            held = self._client = await kubernetes_client.acquire(self.kubernetes_conn_id)
        await held.refresh()
        return held

    async def _custom_objects(self) -> Any:
        """A ``CustomObjectsApi`` over the shared client (a thin wrapper, cheap to build)."""
        from kubernetes_asyncio import client as async_k8s

        shared = await self._shared()
        return async_k8s.CustomObjectsApi(shared.api_client)

    async def _call(self, api: Any, fn: Callable[[], Any], *, write: bool = False) -> Any:
        import asyncio

        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, AsyncApiException):
                return exc.status in RETRY_STATUSES
            return isinstance(exc, (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError))

        async def attempt() -> Any:
            return await fn()

        retrying = tenacity.AsyncRetrying(**_retry_options(self.retry_policy, transient, _log))
        started = time.monotonic()
        try:
            return await retrying(attempt)
        except Exception as exc:
            if not transient(exc):
                raise
            attempts = int(retrying.statistics.get("attempt_number", 1))
            host = api.api_client.configuration.host
            elapsed = time.monotonic() - started
            raise _gave_up(host, attempts, elapsed, exc, write=write) from exc

    async def _served_version(self, api: Any, kind: IstioKind) -> str:
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        assert self._client is not None  # api came from _custom_objects()
        versions = self._client.served_versions
        if kind not in versions:
            for version in ISTIO_VERSIONS:
                try:
                    resources = await self._call(
                        api, partial(api.get_api_resources, GROUP, version)
                    )
                except AsyncApiException as exc:
                    if exc.status == 404:
                        continue
                    raise _api_error(f"discover {GROUP}/{version}", exc) from exc
                if kind.value in _resource_names(resources):
                    versions[kind] = version
                    break
            else:
                raise _unserved(kind)
        return versions[kind]

    async def _aget_custom(
        self, api: Any, resource: _Resource, name: str, namespace: str, not_found: NotFound
    ) -> Document:
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        r = resource
        try:
            found: Document = await self._call(
                api,
                lambda: api.get_namespaced_custom_object(
                    r.group, r.version, namespace, r.plural, name
                ),
            )
        except AsyncApiException as exc:
            raise _refusal(exc, f"read {r.where(name, namespace)}", not_found) from exc
        return found

    async def _aupdate_custom(
        self,
        api: Any,
        resource: _Resource,
        name: str,
        namespace: str,
        transform: Transform,
        not_found: NotFound,
    ) -> UpdateResult:
        """``IstioHook._update_custom``'s steps, driven asynchronously."""
        import asyncio

        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        r = resource
        what = f"{r.kind} {name!r} in namespace {namespace!r}"
        steps = _update_steps(what, transform, self.retry_policy, self._rng)
        try:
            step = next(steps)
            while True:
                reply: Any = None
                if isinstance(step, _Read):
                    reply = await self._aget_custom(api, r, name, namespace, not_found)
                elif isinstance(step, _Replace):
                    try:
                        reply = await self._call(
                            api,
                            partial(
                                api.replace_namespaced_custom_object,
                                r.group,
                                r.version,
                                namespace,
                                r.plural,
                                name,
                                step.body,
                                **WRITE_OPTIONS,
                            ),
                            write=True,
                        )
                    except AsyncApiException as exc:
                        if exc.status != 409:
                            action = f"replace {r.where(name, namespace)}"
                            raise _refusal(exc, action, not_found) from exc
                        reply = _CONFLICT
                else:
                    await asyncio.sleep(step.seconds)
                step = steps.send(reply)
        except StopIteration as done:
            result: UpdateResult = done.value
            return result

    async def _route_resource(
        self, api: Any, router: Router, name: str, namespace: str
    ) -> tuple[_Resource, NotFound]:
        """The route object's resource (an Istio kind at its served version) and its 404."""
        if router.kind is RouterKind.ISTIO:
            kind = IstioKind.VIRTUAL_SERVICE
            version = await self._served_version(api, kind)
            return _Resource.istio(kind, version), _missing_istio_object(kind, name, namespace)
        obj = router.route_object
        return _Resource.route(obj), _missing_route(obj, name, namespace)

    async def aget_route(self, router: Router, name: str, namespace: str) -> Document:
        """Async ``IstioHook.get_route``."""
        api = await self._custom_objects()
        resource, not_found = await self._route_resource(api, router, name, namespace)
        return await self._aget_custom(api, resource, name, namespace, not_found)

    async def aupdate_route(
        self, router: Router, name: str, namespace: str, transform: Transform
    ) -> UpdateResult:
        """Async ``IstioHook.update_route``: same steps, same conflict handling."""
        api = await self._custom_objects()
        resource, not_found = await self._route_resource(api, router, name, namespace)
        return await self._aupdate_custom(api, resource, name, namespace, transform, not_found)

    async def aget_virtual_service(self, name: str, namespace: str = "default") -> Document:
        return await self.aget_route(IstioRouter(), name, namespace)

    async def aupdate_virtual_service(
        self, name: str, namespace: str, transform: Transform
    ) -> UpdateResult:
        """Async ``IstioHook.update_virtual_service``."""
        return await self.aupdate_route(IstioRouter(), name, namespace, transform)

    async def rollback_route(
        self, router: Router, name: str, namespace: str, reason: str = ""
    ) -> dict[str, Any]:
        """``rollback`` on either router: nothing left on the canary, product routes removed."""
        update = await self.aupdate_route(router, name, namespace, router.rollback)
        return route_result(router, name, namespace, update, reason=reason, rolled_back=True)

    async def rollback(
        self, virtual_service: str, namespace: str, target: RouteTarget, reason: str = ""
    ) -> dict[str, Any]:
        """All traffic to the stable subset and product header routes removed, at once.

        Returns the traffic operators' XCom value with ``reason`` and ``rolled_back``.
        """
        update = await self.aupdate_virtual_service(
            virtual_service, namespace, lambda vs: rollback(vs, target)
        )
        return traffic_result(namespace, target, update, reason=reason, rolled_back=True)


__all__ = [
    "GROUP",
    "ISTIO_VERSIONS",
    "AsyncIstioHook",
    "IstioAdmissionError",
    "IstioApiError",
    "IstioApplyConflictError",
    "IstioConflictError",
    "IstioForbiddenError",
    "IstioInvalidError",
    "IstioHook",
    "IstioHookError",
    "IstioKind",
    "IstioNotFoundError",
    "IstioUnavailableError",
    "RetryPolicy",
    "UpdateResult",
    "route_result",
    "traffic_result",
]
