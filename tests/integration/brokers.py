"""MQTT brokers for the event and control tests: the machine's Mosquitto, or a private one the test owns.

``shared_broker_url()`` is the Mosquitto on 127.0.0.1:1883 (``ISO_HOST_TEST_MQTT`` overrides it). When it
does not answer the test is skipped, except on CI (``CI=true``), where it fails: a CI run that silently
skipped the broker would prove nothing about events. ``private_broker`` starts a Mosquitto of the test's
own on a free port, with persistence on, so that a test can stop and restart it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tls_material import TlsFiles
from waiting import until_blocking

URL_VARIABLE = "ISO_HOST_TEST_MQTT"
DEFAULT_URL = "mqtt://127.0.0.1:1883"
START_HINT = "Mosquitto is not running on 127.0.0.1:1883; start it with: mosquitto -d -c /etc/mosquitto/mosquitto.conf"


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; on CI the MQTT tests must run, not skip")
    pytest.skip(message)


def _answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def shared_broker_url() -> str:
    """The machine's broker, or the test skips (fails on CI) when it does not answer."""
    url = os.environ.get(URL_VARIABLE, DEFAULT_URL)
    parts = urlsplit(url)
    if not _answers(parts.hostname or "127.0.0.1", parts.port or 1883):
        _unavailable(START_HINT)
    return url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivateBroker:
    """A Mosquitto process of the test's own; ``stop`` and ``start`` it to stage an outage."""

    port: int
    config: Path
    tls: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [str(shutil.which("mosquitto")), "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        process = self.process

        def listening() -> bool:
            assert process.poll() is None, f"mosquitto exited with {process.returncode}"
            return _answers("127.0.0.1", self.port, 0.2)

        until_blocking(listening, what=f"mosquitto listens on port {self.port}")

    def stop(self) -> None:
        """A clean stop: Mosquitto saves its sessions and queued messages to disk first."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
            self.process = None


def tls_lines(tls: TlsFiles | None) -> str:
    if tls is None:
        return ""
    return f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\ntls_version tlsv1.2\n"


@contextmanager
def private_broker(directory: Path, tls: TlsFiles | None = None) -> Iterator[PrivateBroker]:
    """A fresh Mosquitto on a free port that keeps sessions across its own restarts; TLS only, with ``tls``."""
    if shutil.which("mosquitto") is None:
        _unavailable("the mosquitto program is not installed (Debian: apt install mosquitto)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "mosquitto.conf"
    # Run as the test's own user: Mosquitto started as root otherwise drops to "mosquitto", which cannot
    # write its persistence file (the sessions that must outlive a restart) into the test's directory.
    config.write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {directory}/\nautosave_interval 1\nmax_queued_messages 100000\n" + tls_lines(tls),
        encoding="utf-8",
    )
    broker = PrivateBroker(port, config, tls=tls is not None)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
