"""Istio and Kubernetes API access for traffic steps: versioned reads, conflict-safe writes, retries."""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from functools import cached_property, partial
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import (
    AsyncKubernetesHook,
    KubernetesHook,
)
from airflow.sdk.bases.hook import BaseHook
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

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

GROUP = "networking.istio.io"
#: Versions tried in order; Istio serves the same objects under each of them.
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")

Document = dict[str, Any]
Transform = Callable[[Document], Document]

# Statuses worth retrying: the request did not take effect or the server asked us to wait.
_TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


class IstioHookError(RuntimeError):
    """A Kubernetes API request for traffic control failed; the message says what and where."""


class IstioNotFoundError(IstioHookError, LookupError):
    """The named object does not exist in the namespace."""


class IstioConflictError(IstioHookError):
    """Concurrent writers kept changing the object; every read-modify-replace attempt lost."""


class IstioUnavailableError(IstioHookError, ConnectionError):
    """The Kubernetes API could not be reached within the retry budget; nothing was written."""


class IstioApiError(IstioHookError):
    """The Kubernetes API rejected a request (validation, permissions, unserved kinds)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
    """How hard to try: conflict re-reads, and connection retries within a total deadline."""

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
    for attempt in range(1, policy.conflict_attempts + 1):
        current: Document = yield _Read()
        desired = transform(copy.deepcopy(current))
        if desired == current:
            return UpdateResult(before=current, after=current, changed=False, attempts=attempt)
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


class _RetryBudget:
    """Connection retries left: a count and a total deadline, whichever runs out first."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._start = time.monotonic()
        self.attempts = 0

    def next_delay(self) -> float | None:
        """Delay before the next attempt, or None when the budget is spent."""
        self.attempts += 1
        if self.attempts >= self._policy.connect_attempts:
            return None
        delay = min(self._policy.connect_backoff_seconds * 2 ** (self.attempts - 1), 2.0)
        if self.elapsed + delay > self._policy.connect_deadline_seconds:
            return None
        return delay

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def exhausted(self, host: str, exc: BaseException) -> IstioUnavailableError:
        return IstioUnavailableError(
            f"Kubernetes API at {host} is unreachable after {self.attempts} attempts over "
            f"{self.elapsed:.1f}s: {_short_error(exc)}; nothing was written. Check that the "
            f"API server is running and that the kubernetes connection points at it"
        )


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


def _api_error(action: str, exc: Any) -> IstioApiError:
    status = getattr(exc, "status", None)
    return IstioApiError(
        f"Kubernetes API refused to {action} (HTTP {status}): {_status_message(exc)}", status
    )


def _resource_names(resource_list: Any) -> set[str]:
    resources = getattr(resource_list, "resources", None) or []
    return {getattr(r, "name", None) or "" for r in resources}


def _unserved(kind: IstioKind) -> IstioApiError:
    return IstioApiError(
        f"the Kubernetes API serves no {kind.kind} in {GROUP} (tried "
        f"{', '.join(ISTIO_VERSIONS)}); install Istio or apply its CRDs",
        404,
    )


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


def _contains(current: Any, desired: Any) -> bool:
    """Whether every field ``desired`` sets has that value in ``current`` (servers add defaults)."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            key in current and _contains(current[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(_contains(c, d) for c, d in zip(current, desired, strict=True))
        )
    return bool(current == desired)


def _merge_for_replace(desired: Mapping[str, Any], current: Document, api_version: str) -> Document:
    """``current`` with ``desired``'s content: server-owned metadata and immutable fields kept.

    Returns ``current`` itself when it already has everything ``desired`` sets, so applying an
    unchanged manifest writes nothing even though the server filled in defaults.
    """
    content = {k: v for k, v in desired.items() if k not in ("apiVersion", "metadata", "status")}
    metadata = desired.get("metadata") or {}
    labels = {k: metadata[k] for k in ("labels", "annotations") if k in metadata}
    if _contains(current, content) and _contains(current.get("metadata") or {}, labels):
        return current
    out = copy.deepcopy(current)
    for key, value in desired.items():
        if key not in ("metadata", "status"):
            out[key] = copy.deepcopy(value)
    out["apiVersion"] = api_version
    for key in ("labels", "annotations"):
        if key in metadata:
            out["metadata"][key] = copy.deepcopy(metadata[key])
    if desired.get("kind") == "Service":
        # clusterIP is assigned by the server and immutable; a manifest normally omits it.
        for key in ("clusterIP", "clusterIPs"):
            if key in (current.get("spec") or {}) and key not in (desired.get("spec") or {}):
                out["spec"][key] = copy.deepcopy(current["spec"][key])
    return out


# --- Sync hook ---------------------------------------------------------------------------------


class IstioHook(BaseHook):
    """Reads and writes Istio traffic objects, Deployments, Services and Pods.

    Connection handling (kubeconfig path or content, in-cluster, context) is the cncf-kubernetes
    provider's ``KubernetesHook``; this hook adds Istio's version negotiation, conflict-safe
    replaces and bounded retries on top of the ``ApiClient`` it returns.
    """

    conn_name_attr = "kubernetes_conn_id"
    default_conn_name = "kubernetes_default"
    conn_type = "kubernetes"
    hook_name = "Istio (Kubernetes connection)"

    def __init__(
        self,
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
        in_cluster = KubernetesHook(conn_id=self.kubernetes_conn_id).conn_extras.get("in_cluster")
        return KubernetesHook(
            conn_id=self.kubernetes_conn_id,
            client_configuration=None if in_cluster else k8s.Configuration(),
        )

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

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run one API call, retrying connection failures and transient statuses in budget."""
        budget = _RetryBudget(self.retry_policy)
        while True:
            try:
                return fn()
            except ApiException as exc:
                if exc.status not in _TRANSIENT_STATUSES:
                    raise
                error: BaseException = exc
            except (Urllib3HTTPError, OSError) as exc:
                error = exc
            delay = budget.next_delay()
            if delay is None:
                raise budget.exhausted(self.api_client.configuration.host, error) from error
            self.log.warning(
                "Kubernetes API call failed (%s); retrying in %.2fs", _short_error(error), delay
            )
            time.sleep(delay)

    def _raw(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A typed-API call returning the server's JSON as a dict, not a generated model."""
        response = self._call(lambda: fn(*args, _preload_content=False, **kwargs))
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
        version = self.served_version(kind)
        try:
            obj: Document = self._call(
                lambda: self.custom_objects.get_namespaced_custom_object(
                    GROUP, version, namespace, kind.value, name
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                raise _not_found(kind.kind, name, namespace) from exc
            raise _api_error(f"read {kind.kind} {name!r} in {namespace!r}", exc) from exc
        return obj

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
        version = self.served_version(kind)

        def replace(body: Document) -> Document:
            try:
                written: Document = self._call(
                    lambda: self.custom_objects.replace_namespaced_custom_object(
                        GROUP, version, namespace, kind.value, name, body
                    )
                )
            except ApiException as exc:
                if exc.status == 404:
                    raise _not_found(kind.kind, name, namespace) from exc
                if exc.status == 409:
                    raise
                raise _api_error(f"replace {kind.kind} {name!r} in {namespace!r}", exc) from exc
            return written

        what = f"{kind.kind} {name!r} in namespace {namespace!r}"
        steps = _update_steps(what, transform, self.retry_policy, self._rng)
        return self._run(steps, lambda: self.get_istio_object(kind, name, namespace), replace)

    def update_virtual_service(
        self, name: str, namespace: str, transform: Transform
    ) -> UpdateResult:
        return self.update_istio_object(IstioKind.VIRTUAL_SERVICE, name, namespace, transform)

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
            written: Document = self._raw(
                self.apps_v1.replace_namespaced_deployment, name, namespace, body
            )
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

    def apply_object(self, obj: Mapping[str, Any], namespace: str | None = None) -> UpdateResult:
        """Create ``obj``, or replace the existing one with its content.

        Handles Services, Deployments, DestinationRules and VirtualServices. An existing object
        whose content already matches is not written (``changed`` is False).
        """
        kind = obj.get("kind")
        metadata = obj.get("metadata") or {}
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"object to apply has no metadata.name: kind={kind!r}")
        ns = metadata.get("namespace") or namespace or "default"
        read, create, replace, api_version = self._object_api(obj, name, ns)
        try:
            self._call(read)
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(f"read {kind} {name!r} in {ns!r}", exc) from exc
            body = copy.deepcopy(dict(obj))
            body["apiVersion"] = api_version
            body.setdefault("metadata", {})["namespace"] = ns
            try:
                created = self._call(lambda: create(body))
            except ApiException as create_exc:
                if create_exc.status != 409:  # created meanwhile: fall through to replace
                    raise _api_error(
                        f"create {kind} {name!r} in {ns!r}", create_exc
                    ) from create_exc
            else:
                empty: Document = {}
                return UpdateResult(before=empty, after=created, changed=True, attempts=1)

        def reread() -> Document:
            try:
                current: Document = self._call(read)
            except ApiException as exc:
                if exc.status == 404:
                    raise _not_found(str(kind), name, ns) from exc
                raise _api_error(f"read {kind} {name!r} in {ns!r}", exc) from exc
            return current

        def write(body: Document) -> Document:
            try:
                written: Document = self._call(lambda: replace(body))
            except ApiException as exc:
                if exc.status == 409:
                    raise
                raise _api_error(f"replace {kind} {name!r} in {ns!r}", exc) from exc
            return written

        steps = _update_steps(
            f"{kind} {name!r} in namespace {ns!r}",
            lambda current: _merge_for_replace(obj, current, api_version),
            self.retry_policy,
            self._rng,
        )
        return self._run(steps, reread, write)

    def _object_api(
        self, obj: Mapping[str, Any], name: str, ns: str
    ) -> tuple[
        Callable[[], Document], Callable[[Document], Document], Callable[[Document], Document], str
    ]:
        """(read, create, replace, apiVersion) for the object's kind, each returning a dict."""
        kind = obj.get("kind")
        api_version = str(obj.get("apiVersion") or "")

        def raw(fn: Callable[..., Any], *args: Any) -> Document:
            parsed: Document = json.loads(fn(*args, _preload_content=False).data)
            return parsed

        if kind == "Service" and api_version == "v1":
            return (
                lambda: raw(self.core_v1.read_namespaced_service, name, ns),
                lambda body: raw(self.core_v1.create_namespaced_service, ns, body),
                lambda body: raw(self.core_v1.replace_namespaced_service, name, ns, body),
                api_version,
            )
        if kind == "Deployment" and api_version == "apps/v1":
            return (
                lambda: raw(self.apps_v1.read_namespaced_deployment, name, ns),
                lambda body: raw(self.apps_v1.create_namespaced_deployment, ns, body),
                lambda body: raw(self.apps_v1.replace_namespaced_deployment, name, ns, body),
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
                lambda body: api.create_namespaced_custom_object(
                    GROUP, version, ns, istio.value, body
                ),
                lambda body: api.replace_namespaced_custom_object(
                    GROUP, version, ns, istio.value, name, body
                ),
                f"{GROUP}/{version}",
            )
        raise ValueError(
            f"cannot apply {api_version} {kind} {name!r}: expected a v1 Service, an apps/v1 "
            f"Deployment, or a {GROUP} DestinationRule or VirtualService"
        )


# --- Async hook --------------------------------------------------------------------------------


@dataclass
class AsyncIstioHook:
    """Async twin of ``IstioHook`` for triggers: read, conflict-safe update, and rollback.

    Configuration loading is the provider's ``AsyncKubernetesHook``; calls go through
    kubernetes_asyncio with the same retry budget and update steps as the sync hook.
    """

    kubernetes_conn_id: str = "kubernetes_default"
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    _versions: dict[IstioKind, str] = field(default_factory=dict, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    @cached_property
    def kubernetes_hook(self) -> AsyncKubernetesHook:
        return AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)

    async def _call(self, api: Any, fn: Callable[[], Any]) -> Any:
        import asyncio

        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        budget = _RetryBudget(self.retry_policy)
        while True:
            try:
                return await fn()
            except AsyncApiException as exc:
                if exc.status not in _TRANSIENT_STATUSES:
                    raise
                error: BaseException = exc
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
                error = exc
            delay = budget.next_delay()
            if delay is None:
                raise budget.exhausted(api.api_client.configuration.host, error) from error
            await asyncio.sleep(delay)

    async def _served_version(self, api: Any, kind: IstioKind) -> str:
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        if kind not in self._versions:
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
                    self._versions[kind] = version
                    break
            else:
                raise _unserved(kind)
        return self._versions[kind]

    async def _get(self, api: Any, kind: IstioKind, name: str, namespace: str) -> Document:
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        version = await self._served_version(api, kind)
        try:
            obj: Document = await self._call(
                api,
                lambda: api.get_namespaced_custom_object(
                    GROUP, version, namespace, kind.value, name
                ),
            )
        except AsyncApiException as exc:
            if exc.status == 404:
                raise _not_found(kind.kind, name, namespace) from exc
            raise _api_error(f"read {kind.kind} {name!r} in {namespace!r}", exc) from exc
        return obj

    async def aget_virtual_service(self, name: str, namespace: str = "default") -> Document:
        from kubernetes_asyncio import client as async_k8s

        async with self.kubernetes_hook.get_conn() as api_client:
            api = async_k8s.CustomObjectsApi(api_client)
            return await self._get(api, IstioKind.VIRTUAL_SERVICE, name, namespace)

    async def aupdate_virtual_service(
        self, name: str, namespace: str, transform: Transform
    ) -> UpdateResult:
        """Async ``IstioHook.update_virtual_service``: same steps, same conflict handling."""
        import asyncio

        from kubernetes_asyncio import client as async_k8s
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        kind = IstioKind.VIRTUAL_SERVICE
        async with self.kubernetes_hook.get_conn() as api_client:
            api = async_k8s.CustomObjectsApi(api_client)
            version = await self._served_version(api, kind)
            what = f"{kind.kind} {name!r} in namespace {namespace!r}"
            steps = _update_steps(what, transform, self.retry_policy, self._rng)
            try:
                step = next(steps)
                while True:
                    reply: Any = None
                    if isinstance(step, _Read):
                        reply = await self._get(api, kind, name, namespace)
                    elif isinstance(step, _Replace):
                        try:
                            reply = await self._call(
                                api,
                                partial(
                                    api.replace_namespaced_custom_object,
                                    GROUP,
                                    version,
                                    namespace,
                                    kind.value,
                                    name,
                                    step.body,
                                ),
                            )
                        except AsyncApiException as exc:
                            if exc.status == 404:
                                raise _not_found(kind.kind, name, namespace) from exc
                            if exc.status != 409:
                                raise _api_error(f"replace {what}", exc) from exc
                            reply = _CONFLICT
                    else:
                        await asyncio.sleep(step.seconds)
                    step = steps.send(reply)
            except StopIteration as done:
                result: UpdateResult = done.value
                return result

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
    "IstioApiError",
    "IstioConflictError",
    "IstioHook",
    "IstioHookError",
    "IstioKind",
    "IstioNotFoundError",
    "IstioUnavailableError",
    "RetryPolicy",
    "UpdateResult",
    "traffic_result",
]
