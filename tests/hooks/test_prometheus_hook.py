"""PrometheusHook against a real Prometheus scraping an exporter the test drives, and a header-capturing server."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import Counter

from airflow_canary.hooks.prometheus import (
    PrometheusEndpoint,
    PrometheusHook,
    PrometheusQueryError,
    PrometheusUnavailableError,
)
from airflow_canary.local.tools.prometheus import PrometheusServer, free_port
from tests.fixtures.prometheus import MetricsExporter, scraping


def wait_for(probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``probe`` until it returns a truthy value (Prometheus scrapes every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scraped() -> Iterator[tuple[MetricsExporter, PrometheusServer]]:
    """One exporter and one Prometheus for the module (a new target takes ~5 s to be scraped)."""
    exporter = MetricsExporter().start()
    with scraping(exporter) as server:
        yield exporter, server


@pytest.fixture
def driven(request, scraped, prometheus_conn_env):
    """A counter of this test's own (a fresh metric name), scraped, and the default connection."""
    exporter, server = scraped
    name = "demo_" + request.node.name.removeprefix("test_")[:40]
    counter = Counter(name, "requests the test counts", ["version"], registry=exporter.registry)
    counter.labels("v1").inc(0)
    prometheus_conn_env(server.url)
    return Driven(counter, server, f"{name}_total")


@dataclass(frozen=True)
class Driven:
    counter: Counter
    server: PrometheusServer
    metric: str


def test_query_returns_labelled_samples_and_scalar(driven) -> None:
    m = driven.metric
    driven.counter.labels("v1").inc(7)
    driven.counter.labels("v2").inc(3)
    hook = PrometheusHook(retries=1, backoff_seconds=0.05)
    wait_for(lambda: hook.query_scalar(f"sum({m})") == 10.0)

    samples = hook.query(m + '{job=~".+"}')
    by_version = {s.labels["version"]: s.value for s in samples}
    assert by_version == {"v1": 7.0, "v2": 3.0}
    assert hook.query_scalar(m + '{version="v2"}') == 3.0
    assert hook.query_scalar(f"scalar(sum({m}))") == 10.0
    assert hook.url == driven.server.url


def test_no_data_is_none_and_zero_is_zero(driven) -> None:
    m = driven.metric
    hook = PrometheusHook()
    wait_for(lambda: hook.query_scalar(m + '{version="v1"}') is not None)
    assert hook.query_scalar(m + '{version="v1"}') == 0.0
    assert hook.query_scalar(m + '{version="absent"}') is None
    assert hook.query(m + '{version="absent"}') == []


def test_scalar_of_several_series_is_an_error_naming_the_count(driven) -> None:
    driven.counter.labels("v2").inc()
    hook = PrometheusHook()
    wait_for(lambda: len(hook.query(driven.metric)) == 2)
    with pytest.raises(PrometheusQueryError, match="got 2 series"):
        hook.query_scalar(driven.metric)


def test_query_range_returns_points(driven) -> None:
    m = driven.metric
    driven.counter.labels("v1").inc(5)
    hook = PrometheusHook()
    wait_for(lambda: hook.query_scalar(m + '{version="v1"}') == 5.0)
    end = time.time()
    series = hook.query_range(m + '{version="v1"}', end - 10, end, 1)
    assert len(series) == 1
    assert series[0].labels["version"] == "v1"
    assert series[0].values[-1] == 5.0
    points = series[0].points
    assert all(b[0] - a[0] == pytest.approx(1.0) for a, b in zip(points, points[1:], strict=False))


def test_async_twins_agree_with_sync(driven) -> None:
    m = driven.metric
    driven.counter.labels("v1").inc(4)
    hook = PrometheusHook()
    wait_for(lambda: hook.query_scalar(f"sum({m})") == 4.0)

    async def run() -> tuple[Any, ...]:
        ahook = PrometheusHook()
        end = time.time()
        return await asyncio.gather(
            ahook.aquery(m),
            ahook.aquery_scalar(f"sum({m})"),
            ahook.aquery_scalar("sum(" + m + '{version="none"})'),
            ahook.aquery_range(f"sum({m})", end - 5, end, 1),
        )

    samples, total, missing, series = asyncio.run(run())
    assert [s.value for s in samples] == [4.0]
    assert total == 4.0
    assert missing is None
    assert series[0].values[-1] == 4.0


def test_many_queries_in_one_request_answer_as_each_alone(driven) -> None:
    """Instant and range queries of one poll in one union each get what asking alone gets:
    labelled vectors, a scalar-shaped sum, no data, and a scalar PromQL value that the union
    cannot carry (Prometheus's label_replace takes vectors only), asked again on its own."""
    m = driven.metric
    driven.counter.labels("v1").inc(6)
    driven.counter.labels("v2").inc(2)
    hook = PrometheusHook()
    wait_for(lambda: hook.query_scalar(f"sum({m})") == 8.0)
    instant = [m, f"sum({m})", "sum(" + m + '{version="none"})', f"sum by (version) ({m}) * 2"]
    ranged = [f"sum({m})", m + '{version="v2"}']

    async def run() -> tuple[Any, ...]:
        ahook = PrometheusHook()
        at = time.time()
        many = await ahook.aquery_many(instant, at)
        alone = [await ahook.aquery(q, at) for q in instant]
        with_scalar = await ahook.aquery_many([f"sum({m})", f"scalar(sum({m}))"], at)
        many_range = await ahook.aquery_range_many(ranged, at - 5, at, 1)
        alone_range = [await ahook.aquery_range(q, at - 5, at, 1) for q in ranged]
        await ahook.aclose()
        return many, alone, with_scalar, many_range, alone_range

    many, alone, with_scalar, many_range, alone_range = asyncio.run(run())
    key = lambda samples: sorted((sorted(s.labels.items()), s.value) for s in samples)  # noqa: E731
    assert [key(x) for x in many] == [key(x) for x in alone]
    assert [s.value for s in many[1]] == [8.0] and many[2] == []
    assert [s.value for s in with_scalar[0]] == [8.0]
    assert [(dict(s.labels), s.value) for s in with_scalar[1]] == [({}, 8.0)]
    assert many_range == alone_range
    assert many_range[1][0].labels["version"] == "v2"


def test_a_rejected_query_among_many_fails_alone(driven) -> None:
    """One query Prometheus refuses fails with its own bad_data error; the others answer."""
    m = driven.metric
    driven.counter.labels("v1").inc(3)
    hook = PrometheusHook()
    wait_for(lambda: hook.query_scalar(f"sum({m})") == 3.0)
    answers = asyncio.run(PrometheusHook().aquery_many([f"sum({m})", "sum(", f"count({m})"]))
    assert [s.value for s in answers[0]] == [3.0]  # type: ignore[union-attr]
    assert isinstance(answers[1], PrometheusQueryError)
    assert answers[1].error_type == "bad_data" and answers[1].query == "sum("
    assert [s.value for s in answers[2]] == [1.0]  # type: ignore[union-attr]


def test_hooks_on_one_loop_share_one_client_and_the_last_closes_it(driven) -> None:
    """A triggerer's thousand analyses hold one connection pool per Prometheus, not one each."""

    async def run() -> tuple[Any, ...]:
        hooks = [PrometheusHook() for _ in range(3)]
        await asyncio.gather(*(h.aquery_many(["vector(1)", "vector(2)"]) for h in hooks))
        endpoint = await hooks[0].aendpoint()
        clients = {id(await h._async_client(endpoint)) for h in hooks}
        client = await hooks[0]._async_client(endpoint)
        await hooks[0].aclose()
        await hooks[1].aclose()
        open_after_two = not client.is_closed
        await hooks[2].aclose()
        return clients, open_after_two, client.is_closed

    clients, open_after_two, closed_at_the_end = asyncio.run(run())
    assert len(clients) == 1
    assert open_after_two and closed_at_the_end


def test_parse_error_carries_prometheus_message_and_query(driven) -> None:
    hook = PrometheusHook()
    bad = f"sum(rate({driven.metric}[1m]"
    with pytest.raises(PrometheusQueryError) as info:
        hook.query_scalar(bad)
    assert info.value.error_type == "bad_data"
    assert "parse error" in str(info.value)
    assert bad in str(info.value)

    async def arun() -> None:
        await PrometheusHook().aquery(bad)

    with pytest.raises(PrometheusQueryError, match="parse error"):
        asyncio.run(arun())


def test_test_connection_reports_version(driven) -> None:
    ok, message = PrometheusHook().test_connection()
    assert ok, message
    assert "Prometheus 2." in message


def test_prometheus_down_retries_then_names_the_url(
    prometheus_factory, prometheus_conn_env
) -> None:
    server = prometheus_factory()
    url = server.url
    prometheus_conn_env(url)
    hook = PrometheusHook(retries=2, backoff_seconds=0.05)
    assert hook.query_scalar("vector(1)") == 1.0
    server.stop()

    with pytest.raises(PrometheusUnavailableError) as info:
        hook.query_scalar("vector(1)")
    assert info.value.url == url
    assert info.value.attempts == 3
    assert url in str(info.value)

    with pytest.raises(PrometheusUnavailableError, match=url):
        asyncio.run(PrometheusHook(retries=1, backoff_seconds=0.05).aquery("vector(1)"))
    ok, message = PrometheusHook(retries=0).test_connection()
    assert not ok and url in message


# -- a tiny real HTTP server that records requests and answers what the test says -----------
@dataclass
class CapturingServer:
    status: int = 200
    body: dict[str, Any] = field(
        default_factory=lambda: {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
        }
    )
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "headers": dict(request.headers),
                    "query": dict(request.query),
                    "form": dict(await request.post()),
                }
            )
            return web.json_response(self.body, status=self.status)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture
def capturing_server() -> Iterator[CapturingServer]:
    server = CapturingServer(port=free_port())
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.app())
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", server.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any]) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps(conn))


def test_basic_auth_and_headers_reach_the_server(capturing_server, monkeypatch) -> None:
    _set_conn(
        monkeypatch,
        {
            "conn_type": "prometheus",
            "host": f"http://127.0.0.1:{capturing_server.port}/prom",
            "login": "alice",
            "password": "s3cret",
            "extra": {"headers": {"X-Scope-OrgID": "team-a"}, "timeout": 3},
        },
    )
    hook = PrometheusHook()
    assert hook.query_scalar("up", at=1700000000) == 1.0
    asyncio.run(hook.aquery_scalar("up"))

    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert len(capturing_server.requests) == 2
    for seen in capturing_server.requests:
        assert seen["path"] == "/prom/api/v1/query"
        assert seen["headers"]["Authorization"] == expected
        assert seen["headers"]["X-Scope-OrgID"] == "team-a"
    assert capturing_server.requests[0]["query"] == {"query": "up", "time": "1700000000.0"}


def test_bearer_token_reaches_the_server(capturing_server, monkeypatch) -> None:
    _set_conn(
        monkeypatch,
        {
            "conn_type": "prometheus",
            "host": "127.0.0.1",
            "port": capturing_server.port,
            "schema": "http",
            "extra": {"bearer_token": "tok-123"},
        },
    )
    PrometheusHook().query("up")
    assert capturing_server.requests[0]["headers"]["Authorization"] == "Bearer tok-123"


def test_a_long_query_is_posted_as_a_form(capturing_server, monkeypatch) -> None:
    """Proxies in front of Prometheus refuse request lines over 8 KiB; Prometheus's API takes
    a query in a form body as well."""
    _set_conn(
        monkeypatch,
        {"conn_type": "prometheus", "host": "127.0.0.1", "port": capturing_server.port},
    )
    long = " or ".join(f"vector({i})" for i in range(800))

    async def run() -> None:
        hook = PrometheusHook(retries=0)
        await hook.aquery("vector(1)")
        await hook.aquery(long)
        await hook.aclose()

    asyncio.run(run())
    short, posted = capturing_server.requests
    assert short["method"] == "GET" and short["query"]["query"] == "vector(1)"
    assert posted["method"] == "POST" and posted["query"] == {} and posted["form"]["query"] == long


def test_bad_data_is_not_retried_but_5xx_is(capturing_server, monkeypatch) -> None:
    _set_conn(
        monkeypatch,
        {"conn_type": "prometheus", "host": f"http://127.0.0.1:{capturing_server.port}"},
    )
    capturing_server.status = 400
    capturing_server.body = {"status": "error", "errorType": "bad_data", "error": "parse error: x"}
    with pytest.raises(PrometheusQueryError, match="parse error: x"):
        PrometheusHook(retries=3, backoff_seconds=0.01).query("x(")
    assert len(capturing_server.requests) == 1

    capturing_server.requests.clear()
    capturing_server.status = 503
    capturing_server.body = {"status": "error", "errorType": "unavailable", "error": "overloaded"}
    with pytest.raises(PrometheusUnavailableError, match="overloaded"):
        PrometheusHook(retries=3, backoff_seconds=0.01).query("up")
    assert len(capturing_server.requests) == 4


def test_endpoint_from_connection_fields() -> None:
    from airflow.sdk import Connection

    conn = Connection(
        conn_id="p",
        conn_type="prometheus",
        host="prom.example",
        port=9443,
        schema="https",
        extra=json.dumps({"verify": "/etc/ca.pem", "ui_url": "https://ui", "timeout": "2.5"}),
    )
    endpoint = PrometheusEndpoint.from_connection(conn)
    assert endpoint.base_url == "https://prom.example:9443"
    assert endpoint.verify == "/etc/ca.pem"
    assert endpoint.timeout_seconds == 2.5
    assert endpoint.ui_url == "https://ui"
    assert endpoint.auth is None

    bad = Connection(conn_id="p", conn_type="prometheus", host="h", schema="ftp")
    with pytest.raises(ValueError, match="http or https, got 'ftp'"):
        PrometheusEndpoint.from_connection(bad)
    with pytest.raises(ValueError, match="timeout"):
        PrometheusEndpoint.from_connection(
            Connection(conn_id="p", conn_type="prometheus", host="h", extra='{"timeout": "soon"}')
        )


def test_ui_field_behaviour_matches_provider_info() -> None:
    behaviour = PrometheusHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == ["extra"]
    assert "host" in behaviour["placeholders"]
    assert set(PrometheusHook.get_connection_form_widgets()) == {
        "bearer_token",
        "headers",
        "verify",
        "timeout",
        "ui_url",
    }


@pytest.mark.parametrize(
    "text",
    [
        'sum(rate(istio_requests_total{reporter="source",destination_version=~"v2|v3"}[1m]))',
        'label_replace(up, "canary_query", "0", "", "") or on() vector(1) / 2 + 3 * 4',
        "a b\tc\nd&e=f%g+h#i?j/k\\l'm~n_o.p-q",
        'namespace="café-ß" ✓ \x00\x7f\xff',
        "",
    ],
)
def test_the_form_body_is_what_urlencode_writes(text: str) -> None:
    """The body of a POSTed query is byte for byte ``urllib.parse.urlencode``'s, which Go's
    ``ParseForm`` (Prometheus's API) decodes back to the query."""
    from urllib.parse import parse_qs, urlencode

    from airflow_canary.hooks.prometheus import form_encode

    params = {"query": text, "time": "1700000000.5"}
    assert form_encode(params) == urlencode(params).encode("ascii")
    assert parse_qs(form_encode(params).decode(), keep_blank_values=True)["query"] == [text]
