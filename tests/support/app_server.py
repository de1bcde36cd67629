"""The operator app as a real Streamlit server on 127.0.0.1, and Chromium to drive it.

The server runs ``streamlit run app.py`` in a subprocess with the given BEHAVEMAIL_*
variables, in a working directory of the test's own (so no .env or behavemail.toml
of the checkout is read), and is stopped by its PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import httpx

from tests.support.prometheus import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
APP_PATH = REPOSITORY / "app.py"
ARTIFACTS_DIR = REPOSITORY / "tests" / "artifacts"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 40

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class AppServer:
    """A Streamlit server of the operator app that this test started."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until Streamlit's health endpoint returns 200, raising with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {self.process.returncode} before it was ready:\n"
                                   f"{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/_stcore/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit on {self.url} was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server by its PID, and kill it if it has not exited within 10 s."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def start_app_server(environment: Mapping[str, str], workdir: Path) -> AppServer:
    """Start ``streamlit run app.py`` on a free port of 127.0.0.1 and wait until it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "streamlit.log"
    for attempt in range(1, PORT_ATTEMPTS + 1):
        server = _spawn(environment, workdir, log_path)
        try:
            server.wait_ready()
        except RuntimeError:
            # Another process may have bound the port between free_port() and Streamlit.
            if attempt == PORT_ATTEMPTS or "already in use" not in server.log_tail():
                raise
            continue
        return server
    raise RuntimeError(f"streamlit found no free port in {PORT_ATTEMPTS} attempts")


def _spawn(environment: Mapping[str, str], workdir: Path, log_path: Path) -> AppServer:
    port = free_port()
    child_environment = {**os.environ, **environment, "PYTHONPATH": str(REPOSITORY)}
    command = [sys.executable, "-m", "streamlit", "run", str(APP_PATH),
               "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=workdir, env=child_environment, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
    return AppServer(process=process, port=port, log_path=log_path)


def screenshot_path(name: str) -> Path:
    """Return where a test's screenshot goes: tests/artifacts/NAME.png (git-ignored)."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR / f"{name}.png"
