"""The local mesh's data plane: an HTTP proxy routing by Host the way Istio reads VirtualService, DestinationRule and Service, and Gateway API HTTPRoutes."""

from __future__ import annotations

import asyncio
import enum
import itertools
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from airflow_canary.local.apiserver.store import ObjectStore
from airflow_canary.local.dataplane.httproute import GATEWAY_GROUP, GatewayRoutes
from airflow_canary.local.dataplane.routes import Mirror, RequestView, RetryPolicy, Route, Target
from airflow_canary.local.dataplane.telemetry import Destination, Telemetry

ISTIO_GROUP = "networking.istio.io"
PORT_ANNOTATION = "mesh.airflow-canary.io/port"
DEFAULT_NAMESPACE = "default"

#: Headers that describe one hop and must not be forwarded (RFC 9110 section 7.6.1), plus the framing
#: headers aiohttp recomputes for the body it sends.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


# -- names ---------------------------------------------------------------------------------------


def service_fqdn(host: str, namespace: str) -> str:
    """Expand a Kubernetes service host the way cluster DNS does, relative to ``namespace``.

    ``svc`` -> ``svc.<namespace>.svc.cluster.local``; ``svc.ns`` and ``svc.ns.svc`` are completed;
    anything longer is taken as written.
    """
    host = host.strip().lower().rstrip(".")
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.cluster.local"
    if len(parts) == 2:
        return f"{host}.svc.cluster.local"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.cluster.local"
    return host


def strip_port(host: str) -> str:
    if host.startswith("["):  # IPv6 literal
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def shadow_host(host: str) -> str:
    """The authority Istio gives a mirrored request: ``-shadow`` appended to the host name."""
    name, sep, port = host.partition(":")
    return f"{name}-shadow{sep}{port}"


# -- matching --------------------------------------------------------------------------------------


class MatchKind(enum.Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"
    PRESENT = "present"


@dataclass(frozen=True)
class StringMatch:
    """One Istio StringMatch; ``PRESENT`` is the empty match (``{}``): the value only has to exist."""

    kind: MatchKind
    value: str = ""
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(
        cls, spec: Mapping[str, Any] | None, *, ignore_case: bool = False, where: str
    ) -> StringMatch:
        spec = spec or {}
        given = [k for k in ("exact", "prefix", "regex") if k in spec]
        if len(given) > 1:
            raise ValueError(
                f"{where}: a StringMatch takes one of exact, prefix, regex; got {given}"
            )
        if not given:
            return cls(MatchKind.PRESENT)
        kind = MatchKind(given[0])
        value = str(spec[given[0]])
        if kind is MatchKind.REGEX:
            try:
                # Istio uses RE2 and matches the whole string.
                return cls(kind, value, re.compile(value, re.IGNORECASE if ignore_case else 0))
            except re.error as exc:
                raise ValueError(f"{where}: invalid regex {value!r}: {exc}") from exc
        return cls(kind, value.lower() if ignore_case else value)

    def matches(self, actual: str | None, *, ignore_case: bool = False) -> bool:
        if actual is None:
            return False
        if ignore_case and self.kind is not MatchKind.REGEX:
            actual = actual.lower()
        if self.kind is MatchKind.EXACT:
            return actual == self.value
        if self.kind is MatchKind.PREFIX:
            return actual.startswith(self.value)
        if self.kind is MatchKind.REGEX:
            assert self.pattern is not None
            return self.pattern.fullmatch(actual) is not None
        return True


@dataclass(frozen=True)
class MatchBlock:
    """One entry of an http route's ``match`` list: every condition in it must hold."""

    headers: tuple[tuple[str, StringMatch], ...] = ()
    without_headers: tuple[tuple[str, StringMatch], ...] = ()
    uri: StringMatch | None = None
    ignore_uri_case: bool = False
    method: StringMatch | None = None
    authority: StringMatch | None = None
    query_params: tuple[tuple[str, StringMatch], ...] = ()

    @classmethod
    def parse(cls, spec: Mapping[str, Any], where: str) -> MatchBlock:
        ignore = bool(spec.get("ignoreUriCase", False))

        def pairs(section: str) -> tuple[tuple[str, StringMatch], ...]:
            return tuple(
                (name.lower(), StringMatch.parse(m, where=f"{where}.{section}.{name}"))
                for name, m in (spec.get(section) or {}).items()
            )

        def one(section: str, ignore_case: bool = False) -> StringMatch | None:
            if section not in spec:
                return None
            return StringMatch.parse(
                spec[section], ignore_case=ignore_case, where=f"{where}.{section}"
            )

        return cls(
            headers=pairs("headers"),
            without_headers=pairs("withoutHeaders"),
            uri=one("uri", ignore),
            ignore_uri_case=ignore,
            method=one("method"),
            authority=one("authority"),
            query_params=tuple(
                (name, StringMatch.parse(m, where=f"{where}.queryParams.{name}"))
                for name, m in (spec.get("queryParams") or {}).items()
            ),
        )

    def matches(self, request: RequestView) -> bool:
        if self.uri is not None and not self.uri.matches(
            request.path, ignore_case=self.ignore_uri_case
        ):
            return False
        if self.method is not None and not self.method.matches(request.method):
            return False
        if self.authority is not None and not self.authority.matches(request.authority):
            return False
        for name, match in self.headers:
            if not match.matches(request.headers.get(name)):
                return False
        for name, match in self.without_headers:
            if match.matches(request.headers.get(name)):
                return False
        for name, match in self.query_params:
            if not match.matches(request.query.get(name)):
                return False
        return True


# -- routes ----------------------------------------------------------------------------------------


def _target(destination: Mapping[str, Any], namespace: str) -> Target:
    fqdn = service_fqdn(str(destination.get("host", "")), namespace)
    name, _, rest = fqdn.partition(".")
    ns = rest.split(".", 1)[0] if rest.endswith("svc.cluster.local") else namespace
    return Target(ns, name, destination.get("subset"))


def compile_route(spec: Mapping[str, Any], namespace: str, index: int) -> Route:
    where = f"http[{index}]"
    blocks = tuple(
        MatchBlock.parse(m or {}, f"{where}.match[{i}]")
        for i, m in enumerate(spec.get("match") or [])
    )
    dests = spec.get("route") or []
    targets = tuple(_target(d.get("destination") or {}, namespace) for d in dests)
    weights = [int(d.get("weight", 100 if len(dests) == 1 else 0)) for d in dests]
    mirrors: list[Mirror] = []
    if spec.get("mirror"):
        pct = (spec.get("mirrorPercentage") or {}).get("value", 100.0)
        mirrors.append(Mirror(_target(spec["mirror"], namespace), float(pct)))
    for m in spec.get("mirrors") or []:
        pct = (m.get("percentage") or {}).get("value", 100.0)
        mirrors.append(Mirror(_target(m.get("destination") or {}, namespace), float(pct)))
    return Route(
        name=str(spec.get("name", "")),
        matches=blocks,
        targets=targets,
        cum_weights=tuple(itertools.accumulate(weights)),
        mirrors=tuple(mirrors),
        retries=RetryPolicy.parse(spec.get("retries")),
    )


# -- routing table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A ready pod behind a Service: where to send the request and how to label it."""

    pod: str
    port: int
    destination: Destination


class Outcome(enum.Enum):
    ROUTED = "routed"
    NO_HOST = "no-host"
    NO_ROUTE = "no-route"
    NO_DESTINATION = "no-destination"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    target: Target | None = None
    route: Route | None = None
    message: str = ""


@dataclass(frozen=True)
class _Service:
    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    port: int
    obj: Mapping[str, Any]


def _is_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


class RoutingTable:
    """Routing compiled from one state of the store; immutable once built, rebuilt when the store changes."""

    def __init__(self, store: ObjectStore) -> None:
        self.resource_version = store.resource_version
        self.routes_by_host: dict[str, tuple[Route, ...]] = {}
        self.errors: dict[str, str] = {}
        self.services: dict[str, _Service] = {}
        self.subsets: dict[tuple[str, str], dict[str, tuple[tuple[str, str], ...]]] = {}
        self._pods_by_ns: dict[str, list[_Pod]] = {}
        self._endpoints: dict[Target, tuple[Endpoint, ...] | str] = {}

        for svc in store.list("", "services"):
            meta = svc["metadata"]
            selector = tuple(sorted(((svc.get("spec") or {}).get("selector") or {}).items()))
            service = _Service(meta.get("namespace", DEFAULT_NAMESPACE), meta["name"], selector)
            self.services[f"{service.name}.{service.namespace}.svc.cluster.local"] = service
        for dr in store.list(ISTIO_GROUP, "destinationrules"):
            ns = dr["metadata"].get("namespace", DEFAULT_NAMESPACE)
            spec = dr.get("spec") or {}
            target = _target({"host": spec.get("host", "")}, ns)
            subsets = self.subsets.setdefault((target.namespace, target.service), {})
            for subset in spec.get("subsets") or []:
                subsets.setdefault(
                    str(subset.get("name")), tuple(sorted((subset.get("labels") or {}).items()))
                )
        # Istio resolves conflicts between VirtualServices for one host by creation time; the store
        # lists by name, which is stable and good enough for a single-user mesh.
        for vs in sorted(
            store.list(ISTIO_GROUP, "virtualservices"),
            key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"]),
        ):
            ns = vs["metadata"].get("namespace", DEFAULT_NAMESPACE)
            spec = vs.get("spec") or {}
            try:
                routes = tuple(
                    compile_route(r, ns, i) for i, r in enumerate(spec.get("http") or [])
                )
            except (ValueError, TypeError) as exc:
                routes = ()
                self.errors[f"{ns}/{vs['metadata']['name']}"] = str(exc)
            for host in spec.get("hosts") or []:
                self.routes_by_host.setdefault(service_fqdn(str(host), ns), routes)
        self.gateway_routes = GatewayRoutes(
            store.list(GATEWAY_GROUP, "httproutes"),
            store.list(GATEWAY_GROUP, "gateways"),
            store.list(GATEWAY_GROUP, "referencegrants"),
            self.services,
        )
        self.errors.update(self.gateway_routes.errors)
        for pod in store.list("", "pods"):
            meta = pod.get("metadata") or {}
            port = (meta.get("annotations") or {}).get(PORT_ANNOTATION)
            if port is None or not _is_ready(pod):
                continue
            ns = meta.get("namespace", DEFAULT_NAMESPACE)
            self._pods_by_ns.setdefault(ns, []).append(
                _Pod(meta["name"], ns, meta.get("labels") or {}, int(port), pod)
            )

    def decide(self, request: RequestView) -> Decision:
        """Which route and destination a request takes (a fresh weighted draw per call)."""
        fqdn = service_fqdn(strip_port(request.authority), DEFAULT_NAMESPACE)
        routes = self.routes_by_host.get(fqdn)
        if routes is None:
            # No VirtualService for the host: Gateway API HTTPRoutes (mesh or Gateway) route it.
            routes = self.gateway_routes.routes_for(fqdn, strip_port(request.authority))
        if routes is None:
            service = self.services.get(fqdn)
            if service is None:
                return Decision(
                    Outcome.NO_HOST,
                    message=f"no VirtualService or Service for host {request.authority!r}",
                )
            return Decision(Outcome.ROUTED, Target(service.namespace, service.name))
        for route in routes:
            if route.matches_request(request):
                target = route.choose(_rng)
                if target is None:
                    return Decision(
                        Outcome.NO_DESTINATION,
                        route=route,
                        message="route has no destination with weight > 0",
                    )
                return Decision(Outcome.ROUTED, target, route)
        return Decision(
            Outcome.NO_ROUTE,
            message=f"no http route for {fqdn} matches the request",
        )

    def endpoints(self, target: Target) -> tuple[Endpoint, ...] | str:
        """Ready pods for a destination, or a message saying why there are none."""
        cached = self._endpoints.get(target)
        if cached is None:
            cached = self._resolve(target)
            self._endpoints[target] = cached
        return cached

    def _resolve(self, target: Target) -> tuple[Endpoint, ...] | str:
        service = self.services.get(f"{target.service}.{target.namespace}.svc.cluster.local")
        if service is None:
            return f"no Service {target.namespace}/{target.service}"
        wanted = dict(service.selector)
        if target.subset is not None:
            subsets = self.subsets.get((target.namespace, target.service), {})
            if target.subset not in subsets:
                return f"no DestinationRule subset {target.subset!r} for host {target.service}.{target.namespace}"
            wanted.update(subsets[target.subset])
        if not wanted:
            # A Service without selector has no automatic endpoints.
            return f"Service {target.namespace}/{target.service} has no selector"
        found = tuple(
            Endpoint(
                p.name, p.port, Destination.of_pod(target.service, target.namespace, dict(p.obj))
            )
            for p in self._pods_by_ns.get(target.namespace, [])
            if all(p.labels.get(k) == v for k, v in wanted.items())
        )
        if not found:
            subset = f" subset {target.subset!r}" if target.subset else ""
            return f"no ready pod for {target.service}.{target.namespace}{subset}"
        return found


_rng = random.Random()


# -- proxy -----------------------------------------------------------------------------------------


class DataPlane:
    """Routes and forwards requests; holds the connection pool, routing cache and round-robin state."""

    def __init__(self, store: ObjectStore, telemetry: Telemetry) -> None:
        self.store = store
        self.telemetry = telemetry
        self._table: RoutingTable | None = None
        self._round_robin: dict[Target, itertools.count[int]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()

    def table(self) -> RoutingTable:
        table = self._table
        if table is None or table.resource_version != self.store.resource_version:
            table = self._table = RoutingTable(self.store)
        return table

    def pick(self, target: Target, endpoints: tuple[Endpoint, ...]) -> Endpoint:
        counter = self._round_robin.get(target)
        if counter is None:
            counter = self._round_robin[target] = itertools.count()
        return endpoints[next(counter) % len(endpoints)]

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        authority = request.headers.get("Host", "")
        view = RequestView(authority, request.method, request.path, request.headers, request.query)
        table = self.table()
        decision = table.decide(view)
        if decision.outcome in (Outcome.NO_HOST, Outcome.NO_ROUTE):
            # Envoy answers these itself (NR); no destination sidecar sees them, so no metric.
            return web.Response(status=404, text=decision.message + "\n")
        if decision.target is None:
            status = decision.route.no_backend_status if decision.route is not None else 503
            return web.Response(status=status, text=decision.message + "\n")
        target = decision.target
        if target.error:
            # Gateway API: requests drawn for an invalid backendRef get 500 (HTTPRoute spec).
            return web.Response(status=500, text=f"invalid backend: {target.error}\n")
        body = await request.read()
        # Envoy's connection manager sets x-request-id once, before routing, when the caller sent
        # none; every attempt and every mirrored copy carries that one id.
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        if decision.route is not None:
            for mirror in decision.route.mirrors:
                if mirror.percent >= 100 or _rng.random() * 100 < mirror.percent:
                    self._spawn(self._mirror(table, mirror.target, request, body, request_id))
        endpoints = table.endpoints(target)
        if isinstance(endpoints, str):
            # The caller's sidecar answers itself; no destination sidecar sees the request.
            self.telemetry.record(
                Destination(target.service, target.namespace),
                503,
                (time.perf_counter() - started) * 1000,
                response_flags="UH",
                reporter="source",
            )
            return web.Response(status=503, text=f"no healthy upstream: {endpoints}\n")
        policy = decision.route.retries if decision.route is not None else RetryPolicy()
        tried: list[Endpoint] = []
        while True:
            fresh = tuple(e for e in endpoints if e not in tried) or endpoints
            endpoint = self.pick(target, fresh)  # Istio retries on another host if it can
            tried.append(endpoint)
            response, flags = await self._forward(
                request, body, endpoint, authority, started, request_id
            )
            if len(tried) > policy.attempts or not policy.retries(response.status, flags):
                break
        if len(tried) > 1 and policy.retries(response.status, flags):
            flags = "URX" if flags == "-" else f"{flags},URX"  # retry limit exceeded
        self.telemetry.record(
            endpoint.destination,
            response.status,
            (time.perf_counter() - started) * 1000,
            response_flags=flags,
            reporter="source",
        )
        return response

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _outgoing_headers(
        self, request: web.Request, authority: str, request_id: str
    ) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            if name.lower() not in HOP_BY_HOP:
                headers.add(name, value)
        headers["Host"] = authority
        headers.setdefault("x-forwarded-proto", "http")
        headers["x-request-id"] = request_id
        return headers

    async def _forward(
        self,
        request: web.Request,
        body: bytes,
        endpoint: Endpoint,
        authority: str,
        started: float,
        request_id: str,
    ) -> tuple[web.Response, str]:
        """One attempt at ``endpoint``: the response and its Envoy response flags."""
        assert self._session is not None, "DataPlane.start() was not awaited"
        url = f"http://127.0.0.1:{endpoint.port}{request.raw_path}"
        try:
            async with self._session.request(
                request.method,
                url,
                headers=self._outgoing_headers(request, authority, request_id),
                data=body or None,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                headers: CIMultiDict[str] = CIMultiDict(
                    (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                )
        except aiohttp.ClientConnectorError as exc:
            # Never reached the pod: only the caller's sidecar will report it.
            return self._failed(endpoint, 503, f"upstream connect error: {exc}"), "UF"
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            self.telemetry.record(endpoint.destination, 503, (time.perf_counter() - started) * 1000)
            return self._failed(endpoint, 503, f"upstream connection terminated: {exc}"), "UC"
        except aiohttp.ClientError as exc:
            self.telemetry.record(endpoint.destination, 502, (time.perf_counter() - started) * 1000)
            return self._failed(endpoint, 502, f"bad upstream response: {exc}"), "-"
        headers["x-canary-served-by"] = endpoint.destination.version
        headers["x-canary-pod"] = endpoint.pod
        self.telemetry.record(endpoint.destination, status, (time.perf_counter() - started) * 1000)
        return web.Response(status=status, body=payload, headers=headers), "-"

    def _failed(self, endpoint: Endpoint, code: int, message: str) -> web.Response:
        return web.Response(
            status=code,
            text=message + "\n",
            headers={
                "x-canary-served-by": endpoint.destination.version,
                "x-canary-pod": endpoint.pod,
            },
        )

    async def _mirror(
        self,
        table: RoutingTable,
        target: Target,
        request: web.Request,
        body: bytes,
        request_id: str,
    ) -> None:
        """Send a copy of the request and drop the answer, as Envoy's request mirroring does.

        The copy carries the request's ``x-request-id`` and the authority with ``-shadow``
        appended; the caller never waits for it. Only the mirror target's sidecar reports it
        (``reporter="destination"``): Istio's source-side stats filter sees the routed request
        only, never the shadow copy Envoy's router sends beside it (istio/istio#23496).
        """
        endpoints = table.endpoints(target)
        if isinstance(endpoints, str) or self._session is None:
            return
        endpoint = self.pick(target, endpoints)
        started = time.perf_counter()
        headers = self._outgoing_headers(
            request, shadow_host(request.headers.get("Host", "")), request_id
        )
        try:
            async with self._session.request(
                request.method,
                f"http://127.0.0.1:{endpoint.port}{request.raw_path}",
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as upstream:
                await upstream.read()
                status = upstream.status
        except aiohttp.ClientError:
            status = 503
        # The mirror target's own sidecar reports shadow traffic too.
        self.telemetry.record(endpoint.destination, status, (time.perf_counter() - started) * 1000)


DATA_PLANE_KEY = web.AppKey("data_plane", DataPlane)


def create_data_app(store: ObjectStore, telemetry: Telemetry) -> web.Application:
    """The app the mesh serves on ``--data-port``: every path, every method is routed and proxied."""
    plane = DataPlane(store, telemetry)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[DATA_PLANE_KEY] = plane

    async def on_startup(_app: web.Application) -> None:
        await plane.start()

    async def on_cleanup(_app: web.Application) -> None:
        await plane.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", plane.handle)
    return app
