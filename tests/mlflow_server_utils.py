"""Start the README's cluster tracking setup (``mlflow server`` on 127.0.0.1, SQLite backend, proxied
artifacts) for tests that run jobs against it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(root: Path, port: int) -> list[str]:
    """The README's command (Clusters section), with the store and artifacts under ``root``."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


@contextlib.contextmanager
def mlflow_server(root: Path, timeout: float = 180.0) -> Iterator[str]:
    """Run a tracking server with its store under ``root`` (log in ``root/server.log``); yields its URI."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(server_command(root, port), stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"mlflow server did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_errors(root: Path) -> list[str]:
    """Lines of the server log that report a failed request or an exception."""
    text = (root / "server.log").read_text()
    return [
        line
        for line in text.splitlines()
        if "Traceback" in line or " 500 " in line or "ERROR" in line or "Exception" in line
    ]
