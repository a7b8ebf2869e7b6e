"""Tiny HTTP server for mesh tests: answers with its VERSION, serves /healthz, and counts what it received.

Environment: ``STATUS`` the status it answers with, ``HOLD_FILE`` a path it waits for before
answering (a request held open), ``START_DELAY`` seconds before it listens.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("VERSION", "unknown")
POD = os.environ.get("HOSTNAME", "")
_lock = threading.Lock()
_seen: dict[str, int] = {"requests": 0}
_hosts: list[str] = []
_request_ids: list[str] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the data plane's connection pool is exercised
    # One write per response without Nagle: else headers and body meet delayed ACKs (40 ms stalls).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def _answer(self, status: int, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-version", VERSION)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/healthz":
            self._answer(200, {"status": "ok", "version": VERSION})
            return
        if self.path == "/_stats":
            with _lock:
                self._answer(
                    200,
                    {
                        "requests": _seen["requests"],
                        "hosts": list(_hosts),
                        "request_ids": list(_request_ids),
                        "answered": _seen.get("answered", 0),
                    },
                )
            return
        with _lock:
            _seen["requests"] += 1
            _hosts.append(self.headers.get("Host", ""))
            del _hosts[:-100]
            _request_ids.append(self.headers.get("x-request-id", ""))
            del _request_ids[:-1000]
        hold = os.environ.get("HOLD_FILE")
        while hold and not os.path.exists(hold):
            # A mirror target that has not answered yet: the caller must not be waiting on it.
            time.sleep(0.01)
        with _lock:
            _seen["answered"] = _seen.get("answered", 0) + 1
        status = int(os.environ.get("STATUS", "200"))
        self._answer(
            status,
            {
                "version": VERSION,
                "pod": POD,
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host", ""),
                "body": body.decode("utf-8", "replace"),
                "headers": {k.lower(): v for k, v in self.headers.items()},
            },
        )

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


def main() -> None:
    port = int(os.environ["PORT"])
    # A model server that takes a while to load: its readiness probe fails until it listens.
    time.sleep(float(os.environ.get("START_DELAY", "0")))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"version {VERSION} listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
