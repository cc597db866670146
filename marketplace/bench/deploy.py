"""A marketplace started for one benchmark: twistd on a throwaway embedded
database and ports of its own, stopped (and its files deleted) afterwards."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional


def _twistd() -> str:
    here = Path(sys.executable).parent / "twistd"
    return str(here) if here.exists() else "twistd"


def wait_for_port(port: int, timeout: float, process: Optional[subprocess.Popen] = None) -> None:
    """Wait until something accepts connections on loopback C{port}."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the marketplace exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")
            time.sleep(0.2)


class LocalMarketplace:
    """C{twistd marketplace} with its seller and buyer on C{base_port} and
    C{base_port + 1}, C{workers} processes per service."""

    def __init__(self, base_port: int = 9080, workers: int = 1, log: Optional[Path] = None,
                 extra: Optional[List[str]] = None) -> None:
        self.seller_port = base_port
        self.buyer_port = base_port + 1
        self.payments_port = base_port + 2
        self.workers = workers
        self.extra = list(extra or [])
        self.folder = Path(tempfile.mkdtemp(prefix="marketplace-bench-"))
        self.log = log or self.folder / "twistd.log"
        self.process: Optional[subprocess.Popen] = None

    @property
    def seller(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.seller_port}"

    @property
    def buyer(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.buyer_port}"

    def product_dsn(self) -> str:
        """The connection string of its (embedded) product database."""
        from marketplace.bench.catalogcli import embedded_dsn

        return embedded_dsn(self.folder / "data")

    def command(self) -> List[str]:
        command = [
            _twistd(), "--nodaemon", "--pidfile=", f"--logfile={self.log}", "marketplace",
            f"--seller-listen=tcp:{self.seller_port}:interface=127.0.0.1",
            f"--buyer-listen=tcp:{self.buyer_port}:interface=127.0.0.1",
            f"--payments-listen=tcp:{self.payments_port}:interface=127.0.0.1",
            f"--payments=tcp:host=127.0.0.1:port={self.payments_port}",
            f"--data-dir={self.folder / 'data'}",
            # Room for the scenarios' and --idle's connections.
            "--max-connections=5000",
            # Every client signs up and logs in from this one address.
            "--signups-per-address=1000000",
            # Every scenario's clients are the same accounts, minutes apart.
            "--request-keys-per-minute=1000000",
        ]
        if self.workers != 1:
            command.append(f"--workers={self.workers}")
        return command + self.extra

    def start(self, timeout: float = 120.0) -> None:
        """Start it and wait until both services accept connections."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETPLACE_")}
        self.process = subprocess.Popen(
            self.command(), env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_for_port(self.seller_port, timeout, self.process)
            wait_for_port(self.buyer_port, timeout, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 60.0) -> None:
        """Stop it as Ctrl-C would (SIGTERM) and delete its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["LocalMarketplace", "wait_for_port"]
