"""Screenshot the MLflow UI's runs page of the lmcal experiment with headless Chromium (a check that it opens on
the runs table, with datasets, rather than a GenAI traces overview).

    python workflow/scripts/screenshot_mlflow.py [--store sqlite:///mlflow.db] [--out mlflow-runs.png]

Starts ``mlflow ui`` on 127.0.0.1 (a free port) over the store, opens ``#/experiments/<id>/runs`` in Debian's
``chromium`` (``apt-get install -y chromium``), writes the PNG and stops the UI. Not a Snakemake rule: run it by
hand or from a test (tests/test_mlflow_ui.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1600,1000", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow ui did not start on 127.0.0.1:{port} (exit {proc.poll()})")
            time.sleep(0.5)


def experiment_id(store: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(store).get_experiment_by_name(name)
    if exp is None:
        raise SystemExit(f"no experiment {name!r} in {store}")
    return exp.experiment_id


def screenshot(store: str, out: Path, experiment: str = "lmcal", chromium: str | None = None) -> Path:
    """Serve ``store`` with ``mlflow ui``, screenshot the experiment's runs page to ``out``; returns ``out``."""
    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    exp_id = experiment_id(store, experiment)
    port = free_port()
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile, open(Path(profile) / "ui.log", "w") as log:
        ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"], stdout=log,
                              stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, ui)
            url = f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs"
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/chrome", f"--screenshot={out}",
                            url], check=True, capture_output=True, timeout=180)
        finally:
            ui.terminate()
            ui.wait(timeout=60)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_store = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    ap.add_argument("--store", default=default_store, help="backend store URI (default: $MLFLOW_TRACKING_URI or "
                                                           "./mlflow.db)")
    ap.add_argument("--out", type=Path, default=Path("mlflow-runs.png"))
    ap.add_argument("--experiment", default="lmcal")
    args = ap.parse_args(argv)
    print(screenshot(args.store, args.out, args.experiment))


if __name__ == "__main__":
    main(sys.argv[1:])
