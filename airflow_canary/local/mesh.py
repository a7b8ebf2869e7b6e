"""The ``airflow-canary mesh`` command: the local mesh's Kubernetes API and its companions in one asyncio process."""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import ssl
import sys
import tempfile
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver.authn import TokenSigner
from airflow_canary.local.apiserver.crd_folder import (
    CRDFolderError,
    apply_crd_folder,
    read_crd_folder,
)
from airflow_canary.local.apiserver.kubeconfig import (
    MeshCredentials,
    ServingCert,
    generate_serving_cert,
    new_token,
    read_credentials,
    write_kubeconfig,
)
from airflow_canary.local.apiserver.server import create_api_app
from airflow_canary.local.apiserver.store import ObjectStore
from airflow_canary.local.dataplane.discovery import add_discovery_routes
from airflow_canary.local.dataplane.proxy import create_data_app
from airflow_canary.local.dataplane.telemetry import Telemetry, create_metrics_app
from airflow_canary.local.workloads.imagemap import load_image_map
from airflow_canary.local.workloads.runner import ProcessRunner

HOST = "127.0.0.1"
#: The module kubeconfig users of context canary-mesh-exec run for a fresh token.
CREDENTIAL_PLUGIN = "airflow_canary.local.apiserver.credential_plugin"


@dataclass(frozen=True)
class MeshConfig:
    """Everything ``airflow-canary mesh`` needs; ports of 0 pick a free port."""

    kubeconfig: Path
    api_port: int = 8001
    data_port: int = 8081
    metrics_port: int = 15020
    state_file: Path | None = None
    state_dir: Path | None = None
    image_map: dict[str, list[str]] = field(default_factory=dict)
    #: Bearer token to accept; None reuses the one in an existing mesh kubeconfig, else a new one.
    token: str | None = None
    #: A folder of CustomResourceDefinition YAML applied through the API at start.
    crds: Path | None = None
    #: Lifetime of the tokens the exec credential plugin issues (EKS: 15 minutes).
    token_ttl_seconds: float = 900.0


class PortInUse(Exception):
    """A port the mesh must listen on is taken by another process."""


@dataclass(frozen=True)
class Endpoint:
    """One listening part of the mesh, printed at start."""

    name: str
    url: str


async def _listen(
    runner: web.AppRunner, port: int, flag: str, ssl_context: ssl.SSLContext | None
) -> int:
    # SO_REUSEADDR, as Go's net.Listen (kube-apiserver) sets it: a restarted mesh binds its port
    # while the previous one's connections linger in TIME_WAIT; a socket listening there still
    # holds the port (EADDRINUSE).
    site = web.TCPSite(
        runner, HOST, port, shutdown_timeout=2.0, reuse_address=True, ssl_context=ssl_context
    )
    try:
        await site.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"{flag} {port} is already in use; pick another port with {flag} PORT"
            ) from None
        raise
    # The bound address tells the port when 0 was asked for.
    return int(runner.addresses[-1][1])


async def start_app(
    stack: AsyncExitStack,
    app: web.Application,
    port: int,
    flag: str,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Serve ``app`` on 127.0.0.1:port until ``stack`` closes; returns the bound port."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    return await _listen(runner, port, flag, ssl_context)


async def run_mesh(
    config: MeshConfig, stop: asyncio.Event | None = None, *, announce: bool = True
) -> None:
    """Run the mesh until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None)."""
    stop = stop or _stop_on_signals()
    store = ObjectStore(config.state_file)
    state_dir = config.state_dir or Path(tempfile.mkdtemp(prefix="canary-mesh-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    previous = read_credentials(config.kubeconfig)
    token = config.token or (previous.token if previous else new_token())
    viewer_token = previous.viewer_token if previous and previous.viewer_token else new_token()
    signer = TokenSigner.generate(config.token_ttl_seconds)
    signer_file = signer.save(state_dir / "tls" / "token-signer.json")
    cert = _serving_cert(state_dir)
    endpoints: list[Endpoint] = []
    async with AsyncExitStack() as stack:
        api_port = await start_app(
            stack,
            create_api_app(store, token, viewer_token=viewer_token, signer=signer),
            config.api_port,
            "--api-port",
            cert.ssl_context(state_dir / "tls"),
        )
        server = f"https://{HOST}:{api_port}"
        if config.crds is not None:
            names = await apply_crd_folder(server, token, cert.cert_pem, config.crds)
            if announce:
                print(f"mesh: applied {len(names)} CRDs from {config.crds}", flush=True)
        write_kubeconfig(
            config.kubeconfig,
            MeshCredentials(
                server=server,
                token=token,
                ca_pem=cert.cert_pem,
                viewer_token=viewer_token,
                exec_command=(sys.executable, "-m", CREDENTIAL_PLUGIN, str(signer_file)),
            ),
        )
        endpoints.append(
            Endpoint(
                "Kubernetes API", f"{server} (kubeconfig {config.kubeconfig}, context canary-mesh)"
            )
        )

        # -- companions: the process runner, data plane and telemetry share the store. ----------
        runner = ProcessRunner(store, state_dir, config.image_map)
        await runner.start()
        stack.push_async_callback(
            runner.stop
        )  # closes after the data plane: no process outlives the mesh
        telemetry = Telemetry()
        data_port = await start_app(
            stack, create_data_app(store, telemetry), config.data_port, "--data-port"
        )
        endpoints.append(
            Endpoint("data plane", f"http://{HOST}:{data_port} (route by Host header)")
        )
        metrics_app = create_metrics_app(telemetry)
        add_discovery_routes(metrics_app, store)
        metrics_port = await start_app(stack, metrics_app, config.metrics_port, "--metrics-port")
        endpoints.append(
            Endpoint("Istio telemetry", f"http://{HOST}:{metrics_port}/stats/prometheus")
        )
        endpoints.append(Endpoint("pod discovery", f"http://{HOST}:{metrics_port}/sd/pods"))

        if announce:
            for endpoint in endpoints:
                print(f"mesh: {endpoint.name} at {endpoint.url}", flush=True)
            print(
                f"mesh: state in {config.state_file or 'memory'}, processes in {state_dir}",
                flush=True,
            )
        await stop.wait()


def _serving_cert(state_dir: Path) -> ServingCert:
    """The API's certificate: the one kept in ``state_dir`` (so clients survive a restart) or a new one."""
    cert_file, key_file = state_dir / "tls" / "apiserver.crt", state_dir / "tls" / "apiserver.key"
    if cert_file.exists() and key_file.exists():
        return ServingCert(cert_file.read_bytes(), key_file.read_bytes())
    return generate_serving_cert()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-canary mesh", description="Run the local mesh on 127.0.0.1."
    )
    parser.add_argument(
        "--api-port", type=int, default=8001, help="Kubernetes API port (0: any free port)"
    )
    parser.add_argument(
        "--kubeconfig", type=Path, required=True, help="where to write the kubeconfig"
    )
    parser.add_argument(
        "--state-file", type=Path, help="keep API objects in this file across restarts"
    )
    parser.add_argument(
        "--state-dir", type=Path, help="directory for process logs and runtime files"
    )
    parser.add_argument("--data-port", type=int, default=8081, help="data-plane (proxy) port")
    parser.add_argument("--metrics-port", type=int, default=15020, help="Istio telemetry port")
    parser.add_argument(
        "--image-map", type=Path, help="JSON/YAML map of container image to command"
    )
    parser.add_argument(
        "--crds",
        type=Path,
        metavar="DIR",
        help="apply this folder of CustomResourceDefinition YAML at start (e.g. your Istio "
        "release's CRDs); objects of those kinds are then validated against their schemas",
    )
    parser.add_argument(
        "--token-ttl",
        type=float,
        default=900.0,
        help="seconds a token from the exec credential plugin (context canary-mesh-exec) is valid",
    )
    return parser


def run_event_loop(main_coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the mesh's event loop: uvloop when installed (the proxy's hot path is the event loop
    and aiohttp's I/O, which uvloop speeds up), else asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        image_map = load_image_map(args.image_map) if args.image_map else {}
    except (OSError, ValueError) as exc:
        print(f"airflow-canary mesh: --image-map: {exc}", file=sys.stderr)
        return 2
    if args.crds is not None:
        try:
            read_crd_folder(args.crds)
        except CRDFolderError as exc:
            print(f"airflow-canary mesh: --crds: {exc}", file=sys.stderr)
            return 2
    config = MeshConfig(
        kubeconfig=args.kubeconfig,
        api_port=args.api_port,
        data_port=args.data_port,
        metrics_port=args.metrics_port,
        state_file=args.state_file,
        state_dir=args.state_dir,
        image_map=image_map,
        crds=args.crds,
        token_ttl_seconds=args.token_ttl,
    )
    try:
        run_event_loop(run_mesh(config))
    except PortInUse as exc:
        print(f"airflow-canary mesh: {exc}", file=sys.stderr)
        return 1
    except CRDFolderError as exc:
        print(f"airflow-canary mesh: --crds: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    print("mesh: stopped", flush=True)
    return 0
