"""Prometheus HTTP API hook: instant and range queries, sync and async, with bounded retries."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity
from airflow.sdk import BaseHook

from airflow_canary.analysis.promql import UNION_LABEL, union
from airflow_canary.durations import to_seconds

Timestamp = datetime | float | int


class PrometheusError(Exception):
    """Base class of the errors this hook raises."""


class PrometheusQueryError(PrometheusError):
    """Prometheus rejected or failed a query (bad PromQL, execution error, unexpected result)."""

    def __init__(self, query: str, message: str, error_type: str | None = None) -> None:
        self.query = query
        self.error_type = error_type
        self.error = message
        kind = f"{error_type}: " if error_type else ""
        super().__init__(f"Prometheus query failed ({kind}{message}); query: {query}")


class PrometheusUnavailableError(PrometheusError):
    """Prometheus could not be reached or kept failing after the retries."""

    def __init__(self, url: str, attempts: int, cause: str) -> None:
        self.url = url
        self.attempts = attempts
        self.cause = cause
        super().__init__(f"Prometheus at {url} is unavailable after {attempts} attempt(s): {cause}")


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector (or a scalar, with no labels)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: labels and ``(epoch seconds, value)`` points."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def values(self) -> list[float]:
        return [value for _, value in self.points]


@dataclass(frozen=True)
class PrometheusEndpoint:
    """Where and how to reach Prometheus, resolved from an Airflow connection."""

    base_url: str
    auth: tuple[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    verify: bool | str = True
    timeout_seconds: float = 10.0
    ui_url: str | None = None

    @property
    def pool_key(self) -> Hashable:
        """Everything a client is built from: endpoints with equal keys can share a client."""
        return (
            self.base_url,
            self.auth,
            tuple(sorted(self.headers.items())),
            self.verify,
            self.timeout_seconds,
        )

    @classmethod
    def from_connection(cls, conn: Any) -> PrometheusEndpoint:
        raw: dict[str, Any] = dict(conn.extra_dejson or {})
        # Older connection forms stored custom fields as extra__<conn_type>__<name>.
        extra = {
            key.removeprefix("extra__prometheus__"): value
            for key, value in raw.items()
            if value not in (None, "")
        }
        base_url = _base_url(conn.host, conn.port, conn.schema)
        headers = extra.get("headers") or {}
        if isinstance(headers, str):
            try:
                headers = json.loads(headers)
            except ValueError:
                raise ValueError(
                    f"connection extra 'headers' must be a JSON object, got {headers!r}"
                ) from None
        if not isinstance(headers, Mapping):
            raise ValueError(f"connection extra 'headers' must be a JSON object, got {headers!r}")
        headers = {str(k): str(v) for k, v in headers.items()}
        token = extra.get("bearer_token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        auth = (conn.login, conn.password or "") if conn.login else None
        verify = _parse_verify(extra.get("verify", True))
        timeout = extra.get("timeout", 10)
        try:
            timeout_seconds = float(timeout)
        except (TypeError, ValueError):
            raise ValueError(
                f"connection extra 'timeout' must be a number of seconds, got {timeout!r}"
            ) from None
        if timeout_seconds <= 0:
            raise ValueError(f"connection extra 'timeout' must be positive, got {timeout!r}")
        return cls(
            base_url=base_url,
            auth=auth,
            headers=headers,
            verify=verify,
            timeout_seconds=timeout_seconds,
            ui_url=extra.get("ui_url") or None,
        )


def _base_url(host: str | None, port: int | None, schema: str | None) -> str:
    if not host:
        raise ValueError(
            "Prometheus connection needs a host, e.g. 127.0.0.1 or http://prometheus:9090"
        )
    if "://" in host:
        parts = urlsplit(host)
        scheme, netloc, path = parts.scheme, parts.netloc, parts.path.rstrip("/")
        if port and parts.port is None:
            netloc = f"{netloc}:{port}"
        return f"{scheme}://{netloc}{path}"
    scheme = (schema or "http").lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"Prometheus connection schema must be http or https, got {schema!r}")
    host, _, path = host.partition("/")
    netloc = f"{host}:{port}" if port else host
    return f"{scheme}://{netloc}" + (f"/{path.rstrip('/')}" if path else "")


def _parse_verify(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        return value  # a CA bundle path
    raise ValueError(
        f"connection extra 'verify' must be true/false or a CA bundle path, got {value!r}"
    )


def _epoch(at: Timestamp) -> float:
    return at.timestamp() if isinstance(at, datetime) else float(at)


def _float(text: Any) -> float:
    # Prometheus encodes sample values as strings, including "NaN" and "+Inf".
    return float(text)


class _Retry(Exception):
    """A response worth retrying (5xx, connection failure, timeout)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def _decode(query: str, response: httpx.Response) -> Any:
    """Return ``data`` of a successful API response, raise _Retry or PrometheusQueryError."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("status") == "success":
        return body.get("data")
    if isinstance(body, dict) and body.get("status") == "error":
        error_type = body.get("errorType")
        message = str(body.get("error"))
        if response.status_code >= 500 or error_type in ("timeout", "unavailable", "internal"):
            raise _Retry(f"HTTP {response.status_code} {error_type}: {message}")
        raise PrometheusQueryError(query, message, error_type)
    if response.status_code >= 500:
        raise _Retry(f"HTTP {response.status_code}: {response.text[:200]}")
    raise PrometheusQueryError(
        query, f"unexpected HTTP {response.status_code} response: {response.text[:200]}"
    )


def _samples(query: str, data: Any) -> list[Sample]:
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "vector":
        return [Sample(dict(item["metric"]), _float(item["value"][1])) for item in result]
    if result_type == "scalar":
        return [Sample({}, _float(result[1]))]
    raise PrometheusQueryError(
        query, f"expected an instant vector or scalar, got a {result_type} result"
    )


def _series(query: str, data: Any) -> list[Series]:
    if data.get("resultType") != "matrix":
        raise PrometheusQueryError(
            query, f"expected a range (matrix) result, got a {data.get('resultType')} result"
        )
    return [
        Series(dict(item["metric"]), tuple((float(t), _float(v)) for t, v in item["values"]))
        for item in data["result"]
    ]


def scalar_value(query: str, samples: Sequence[Sample]) -> float | None:
    """The one value of ``samples`` (the answer to ``query``), None for none.

    :raises PrometheusQueryError: for more than one series
    """
    if not samples:
        return None
    if len(samples) > 1:
        labels = ", ".join(str(dict(s.labels)) for s in samples[:3])
        raise PrometheusQueryError(
            query,
            f"expected a single value but got {len(samples)} series ({labels}...); "
            "aggregate it, e.g. sum(...)",
        )
    return samples[0].value


class PrometheusHook(BaseHook):
    """
    Query Prometheus's HTTP API (``/api/v1/query``, ``/api/v1/query_range``).

    The connection's host may be a name (with ``port`` and ``schema`` http/https) or a full
    URL. Login/password give basic auth; extras: ``bearer_token``, ``headers`` (object),
    ``verify`` (bool or CA bundle path), ``timeout`` (seconds), ``ui_url``.

    ``query_scalar`` returns ``None`` when the query matched nothing: no data is never 0.
    Parse errors (``bad_data``) fail at once; HTTP 5xx, connection errors and timeouts are
    retried ``retries`` times with a short backoff, then raise ``PrometheusUnavailableError``.

    :param prometheus_conn_id: id of an Airflow connection of type ``prometheus``; it is looked
        up on the first query (a missing one raises Airflow's ``AirflowNotFoundException``)
    :param retries: further attempts after the first, an integer >= 0 (tenacity)
    :param backoff_seconds: wait before the first retry, doubled for each next one (seconds)
    :raises ValueError: for a negative ``retries``
    """

    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "prometheus_default"
    conn_type = "prometheus"
    hook_name = "Prometheus"

    def __init__(
        self,
        *,
        prometheus_conn_id: str = default_conn_name,
        retries: int = 3,
        backoff_seconds: float = 0.2,
    ) -> None:
        super().__init__()
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.prometheus_conn_id = prometheus_conn_id
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._endpoint: PrometheusEndpoint | None = None
        self._endpoint_lookup: asyncio.Task[PrometheusEndpoint] | None = None
        self._aclient: _PoolKey | None = None  # the shared client this hook holds

    # -- UI --------------------------------------------------------------------------------
    # Airflow >= 3.2 reads the form from the provider info ("conn-fields", "ui-field-behaviour"
    # in airflow_canary.get_provider_info); these classmethods serve the same data to callers
    # that still ask the hook, from that single definition.
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        return dict(_connection_type_info().get("conn-fields", {}))

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        behaviour = _connection_type_info().get("ui-field-behaviour", {})
        return {
            "hidden_fields": list(behaviour.get("hidden-fields", [])),
            "relabeling": dict(behaviour.get("relabeling", {})),
            "placeholders": dict(behaviour.get("placeholders", {})),
        }

    # -- connection ------------------------------------------------------------------------
    @property
    def endpoint(self) -> PrometheusEndpoint:
        if self._endpoint is None:
            conn = self.get_connection(self.prometheus_conn_id)
            self._endpoint = PrometheusEndpoint.from_connection(conn)
        return self._endpoint

    async def aendpoint(self) -> PrometheusEndpoint:
        # The triggerer's event loop must not block on the sync connection lookup, and the
        # queries of a first poll, started together, share one lookup.
        if self._endpoint is None:
            loop = asyncio.get_running_loop()
            pending = self._endpoint_lookup
            if pending is None or pending.get_loop() is not loop:
                pending = self._endpoint_lookup = loop.create_task(self._lookup_endpoint())
            try:
                self._endpoint = await asyncio.shield(pending)
            finally:
                if pending.done():
                    self._endpoint_lookup = None
        return self._endpoint

    async def _lookup_endpoint(self) -> PrometheusEndpoint:
        conn = await self.aget_connection(self.prometheus_conn_id)
        return PrometheusEndpoint.from_connection(conn)

    @property
    def url(self) -> str:
        return self.endpoint.base_url

    def get_conn(self) -> httpx.Client:
        ep = self.endpoint
        return httpx.Client(
            base_url=ep.base_url,
            auth=ep.auth,
            headers=dict(ep.headers),
            verify=ep.verify,
            timeout=ep.timeout_seconds,
        )

    def get_async_conn(self, endpoint: PrometheusEndpoint) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=endpoint.base_url,
            auth=endpoint.auth,
            headers=dict(endpoint.headers),
            verify=endpoint.verify,
            timeout=endpoint.timeout_seconds,
        )

    # -- sync API --------------------------------------------------------------------------
    def query(self, promql: str, at: Timestamp | None = None) -> list[Sample]:
        return _samples(promql, self._get("/api/v1/query", promql, _instant_params(promql, at)))

    def query_scalar(self, promql: str, at: Timestamp | None = None) -> float | None:
        return scalar_value(promql, self.query(promql, at))

    def query_range(
        self,
        promql: str,
        start: Timestamp,
        end: Timestamp,
        step: timedelta | float,
    ) -> list[Series]:
        params = _range_params(promql, start, end, step)
        return _series(promql, self._get("/api/v1/query_range", promql, params))

    def test_connection(self) -> tuple[bool, str]:
        try:
            data = self._get("/api/v1/status/buildinfo", "buildinfo", {})
        except (PrometheusError, ValueError) as err:
            return False, str(err)
        return True, f"Connected to Prometheus {data.get('version', '?')} at {self.url}"

    # -- async API -------------------------------------------------------------------------
    async def aquery(self, promql: str, at: Timestamp | None = None) -> list[Sample]:
        data = await self._aget("/api/v1/query", promql, _instant_params(promql, at))
        return _samples(promql, data)

    async def aquery_scalar(self, promql: str, at: Timestamp | None = None) -> float | None:
        return scalar_value(promql, await self.aquery(promql, at))

    async def aquery_range(
        self,
        promql: str,
        start: Timestamp,
        end: Timestamp,
        step: timedelta | float,
    ) -> list[Series]:
        params = _range_params(promql, start, end, step)
        return _series(promql, await self._aget("/api/v1/query_range", promql, params))

    async def aquery_many(
        self, promqls: Sequence[str], at: Timestamp | None = None
    ) -> list[list[Sample] | PrometheusError]:
        """Several instant queries evaluated at the same instant ``at``, in one HTTP request.

        Returns, in the order of ``promqls``, each query's samples (as :meth:`aquery` would
        return them) or the error it got. The queries travel as one union
        (:func:`airflow_canary.analysis.promql.union`); when Prometheus rejects the union, each
        query is asked alone, so every one gets its own answer or its own error. When
        Prometheus is unreachable every query gets that error, without asking again.
        """

        async def one_request() -> list[Sample]:
            return await self.aquery(union(promqls), at)

        async def alone(promql: str) -> list[Sample]:
            return await self.aquery(promql, at)

        return await self._many(promqls, one_request, alone)  # type: ignore[return-value]

    async def aquery_range_many(
        self,
        promqls: Sequence[str],
        start: Timestamp,
        end: Timestamp,
        step: timedelta | float,
    ) -> list[list[Series] | PrometheusError]:
        """Several range queries over the same range and step, in one HTTP request.

        As :meth:`aquery_many`: each query's series (as :meth:`aquery_range` would return them)
        or its error, in the order of ``promqls``.
        """

        async def one_request() -> list[Series]:
            return await self.aquery_range(union(promqls), start, end, step)

        async def alone(promql: str) -> list[Series]:
            return await self.aquery_range(promql, start, end, step)

        return await self._many(promqls, one_request, alone)  # type: ignore[return-value]

    async def _many(self, promqls: Sequence[str], one_request: Any, alone: Any) -> list[Any]:
        if not promqls:
            return []
        if len(promqls) == 1:
            try:
                return [await alone(promqls[0])]
            except PrometheusError as err:
                return [err]
        try:
            tagged = await one_request()
        except PrometheusUnavailableError as err:
            return [err] * len(promqls)
        except PrometheusError:
            return list(await asyncio.gather(*(_outcome(alone(q)) for q in promqls)))
        out: list[list[Any]] = [[] for _ in promqls]
        for item in tagged:
            labels = dict(item.labels)
            index = labels.pop(UNION_LABEL, None)
            if index is not None and index.isdigit() and int(index) < len(out):
                out[int(index)].append(_relabelled(item, labels))
        return out  # type: ignore[return-value]

    # -- transport with retries ------------------------------------------------------------
    def _retry_policy(self, endpoint: PrometheusEndpoint, path: str) -> dict[str, Any]:
        """tenacity arguments: ``retries`` more attempts after the first on 5xx, connection
        errors and timeouts, waiting ``backoff_seconds × 2^(n-1)`` before retry n."""

        def log_attempt(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            self.log.warning(
                "Prometheus %s%s attempt %d failed: %s",
                endpoint.base_url,
                path,
                state.attempt_number,
                _cause(error),
            )

        return {
            "stop": tenacity.stop_after_attempt(self.retries + 1),
            "wait": tenacity.wait_exponential(multiplier=self.backoff_seconds, min=0, exp_base=2),
            "retry": tenacity.retry_if_exception_type((_Retry, httpx.TransportError)),
            "before_sleep": log_attempt,
            "reraise": True,
        }

    def _get(self, path: str, query: str, params: Mapping[str, str]) -> Any:
        endpoint = self.endpoint
        with self.get_conn() as client:
            try:
                for attempt in tenacity.Retrying(**self._retry_policy(endpoint, path)):
                    with attempt:
                        return _decode(query, client.get(path, params=dict(params)))
            except (_Retry, httpx.TransportError) as err:
                raise PrometheusUnavailableError(
                    endpoint.base_url, self.retries + 1, _cause(err)
                ) from None
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    async def _async_client(self, endpoint: PrometheusEndpoint) -> httpx.AsyncClient:
        """The event loop's shared client (connection pool) for ``endpoint``.

        Every hook of a process that reaches the same Prometheus with the same settings, on the
        same loop, uses one client: a triggerer running a thousand analyses keeps one pool of
        connections instead of a thousand, and builds it once, in a worker thread, since
        building one loads the CA bundle (about 0.1 s) and must not stall the loop. The hook
        holds its share until :meth:`aclose`; the last holder closes the client.
        """
        loop = asyncio.get_running_loop()
        key = _PoolKey(loop, endpoint.pool_key)
        held = self._aclient
        if held == key:
            pool = _POOLS.get(key)
            if pool is not None and pool.client is not None and not pool.client.is_closed:
                return pool.client
        pool = _POOLS.get(key)
        if (
            pool is None
            or pool.build.cancelled()
            or (pool.client is not None and pool.client.is_closed)
        ):
            build = loop.create_task(asyncio.to_thread(self.get_async_conn, endpoint))
            pool = _POOLS[key] = _Pool(build)
        try:
            client = await asyncio.shield(pool.build)
        except Exception:
            if _POOLS.get(key) is pool:
                del _POOLS[key]  # the next query tries again
            raise
        pool.client = client
        if self._aclient != key:
            self._release()
            pool.users += 1
            self._aclient = key
        return client

    def _release(self) -> httpx.AsyncClient | None:
        """Give up this hook's share; the client to close when it was the last one."""
        held, self._aclient = self._aclient, None
        if held is None:
            return None
        pool = _POOLS.get(held)
        if pool is None:
            return None
        pool.users -= 1
        if pool.users > 0:
            return None
        del _POOLS[held]
        if held.loop.is_closed():
            return None  # its connections went with the loop
        return pool.client

    async def aclose(self) -> None:
        """Give up this hook's share of the shared client; the last hook out closes it."""
        held = self._aclient
        if held is not None and held.loop is not asyncio.get_running_loop():
            self._release()
            return
        client = self._release()
        if client is not None:
            await client.aclose()

    async def _aget(self, path: str, query: str, params: Mapping[str, str]) -> Any:
        endpoint = await self.aendpoint()
        client = await self._async_client(endpoint)
        # A long query (several queries in one) goes in a form body: proxies in front of
        # Prometheus often refuse request lines over 8 KiB; the API takes both (its docs).
        form = form_encode(params)
        post = len(form) > MAX_GET_QUERY_BYTES
        try:
            async for attempt in tenacity.AsyncRetrying(**self._retry_policy(endpoint, path)):
                with attempt:
                    if post:
                        response = await client.post(path, content=form, headers=FORM_HEADERS)
                    else:
                        response = await client.get(path, params=dict(params))
                    return _decode(query, response)
        except (_Retry, httpx.TransportError) as err:
            raise PrometheusUnavailableError(
                endpoint.base_url, self.retries + 1, _cause(err)
            ) from None
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


#: Longest URL query string sent as a GET; longer ones are POSTed as a form.
MAX_GET_QUERY_BYTES = 4096

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}

#: Each byte (as a latin-1 character) -> itself or its escape, as ``urllib.parse.quote_plus``
#: writes it: letters, digits and ``_.-~`` stay, a space is ``+``, the rest ``%XX``.
_FORM_ESCAPES = {
    byte: (
        chr(byte)
        if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "_.-~")
        else "+"
        if byte == 0x20
        else f"%{byte:02X}"
    )
    for byte in range(256)
}


def form_encode(params: Mapping[str, str]) -> bytes:
    """``params`` as an ``application/x-www-form-urlencoded`` body, byte for byte what
    ``urllib.parse.urlencode`` gives, at C speed: urlencode escapes byte by byte in Python,
    which for a poll's union of queries (about 6 KiB of PromQL) cost milliseconds of the
    event loop per request."""
    return "&".join(
        f"{_form_escape(key)}={_form_escape(value)}" for key, value in params.items()
    ).encode("ascii")


def _form_escape(text: str) -> str:
    return text.encode("utf-8").decode("latin-1").translate(_FORM_ESCAPES)


@dataclass(frozen=True)
class _PoolKey:
    """A shared client's identity: the event loop it runs on and what it was built from."""

    loop: asyncio.AbstractEventLoop
    endpoint: Hashable


@dataclass
class _Pool:
    """A shared client: its build (in a worker thread), the client, and the hooks holding it."""

    build: asyncio.Task[httpx.AsyncClient]
    client: httpx.AsyncClient | None = None
    users: int = 0


#: The process's shared async clients, one per event loop and endpoint.
_POOLS: dict[_PoolKey, _Pool] = {}


def _relabelled(item: Sample | Series, labels: Mapping[str, str]) -> Sample | Series:
    # Built directly: dataclasses.replace() inspects the fields on every call, and a poll's
    # answer holds a few dozen samples (a histogram's buckets for both arms).
    if isinstance(item, Sample):
        return Sample(labels, item.value)
    return Series(labels, item.points)


async def _outcome(answer: Any) -> Any:
    try:
        return await answer
    except PrometheusError as err:
        return err


def _cause(error: BaseException | None) -> str:
    if isinstance(error, _Retry):
        return error.cause
    if error is None:
        return "no detail"
    return f"{type(error).__name__}: {error or 'no detail'}"


def _connection_type_info() -> dict[str, Any]:
    from airflow_canary import get_provider_info

    for conn_type in get_provider_info().get("connection-types", []):
        if conn_type.get("connection-type") == PrometheusHook.conn_type:
            return dict(conn_type)
    return {}


def _instant_params(promql: str, at: Timestamp | None) -> dict[str, str]:
    if not promql or not promql.strip():
        raise ValueError("promql must be a non-empty PromQL expression")
    params = {"query": promql}
    if at is not None:
        params["time"] = repr(_epoch(at))
    return params


def _range_params(
    promql: str, start: Timestamp, end: Timestamp, step: timedelta | float
) -> dict[str, str]:
    if not promql or not promql.strip():
        raise ValueError("promql must be a non-empty PromQL expression")
    start_s, end_s = _epoch(start), _epoch(end)
    if end_s < start_s:
        raise ValueError(f"query_range end ({end!r}) is before start ({start!r})")
    step_s = to_seconds("step", step)
    if math.isinf(step_s):
        raise ValueError(f"step must be finite, got {step!r}")
    return {"query": promql, "start": repr(start_s), "end": repr(end_s), "step": repr(step_s)}
