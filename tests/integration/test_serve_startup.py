"""`iso-host serve` starting up as a user sees it: at once when the broker refuses connections, and a second host
beside a running one refused for its port (not for the ledger the first one holds)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from datetime import datetime
from pathlib import Path

from brokers import free_port
from processes import ISO_HOST, started

from iso_host.app import MQTT_READY_TIMEOUT_S

LINE_TIMEOUT_S = 10.0  # to fail a broken test, not to measure a fast one


def _timestamp(line: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(line["timestamp"]))


def test_starts_at_once_when_the_broker_refuses(tmp_path: Path) -> None:
    """With [events] on and nothing listening on the broker's port, the host serves as soon as the broker refused the
    relay (by the host's own clock), instead of waiting MQTT_READY_TIMEOUT_S for a broker that cannot come."""
    config = tmp_path / "host.toml"
    config.write_text(f'[events]\nmqtt_url = "mqtt://127.0.0.1:{free_port()}"\n', encoding="utf-8")
    with started(tmp_path, "--config", str(config)) as (_, process, lines):
        listening = lines[-1]
        assert process.stdout is not None
        later: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [later.put(line) for line in process.stdout or ()], daemon=True).start()
        refused = next((line for line in lines if line["event"] == "events_unavailable"), None)
        while refused is None:
            line = json.loads(later.get(timeout=LINE_TIMEOUT_S))
            refused = line if line["event"] == "events_unavailable" else None
    waited_s = (_timestamp(listening) - _timestamp(refused)).total_seconds()
    assert "Connection refused" in str(refused["error"])
    assert waited_s < MQTT_READY_TIMEOUT_S / 3, f"served {waited_s:.2f} s after the broker refused"


def test_a_second_host_on_the_port_is_refused_for_the_port(tmp_path: Path) -> None:
    """A second `serve` on a running host's port (and ledger) says the address is in use, in one line, exit 2."""
    with started(tmp_path) as (address, _, _):
        port = address.rsplit(":", 1)[1]
        second = subprocess.run(
            [*ISO_HOST, "serve", "--port", port, "--log-format", "json"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert second.returncode == 2
    assert second.stderr == f"iso-host: server.port: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert "listening on" not in second.stdout
