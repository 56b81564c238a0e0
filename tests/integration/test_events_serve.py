"""The README's walk-through, as a user runs it: `iso-host serve` with [events] and [control], `iso-host events
tail`, `iso-host terminal` and `iso-host control`, each its own process, over the machine's Mosquitto."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

from brokers import shared_broker_url
from processes import ISO_HOST, serving, terminal

EVENTS_EXPECTED = 5


def control(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ISO_HOST, "control", "--config", str(config), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_serve_publishes_events_and_takes_live_control(tmp_path: Path) -> None:
    """A sale is published; a scenario added live declines the next matching sale; a clock advanced live puts
    the first sale past its void window; the tail sees all of it, in order."""
    prefix = f"iso-host-test-{secrets.token_hex(4)}"
    config = tmp_path / "events.toml"
    config.write_text(
        f'[events]\nmqtt_url = "{shared_broker_url()}"\ntopic_prefix = "{prefix}"\n[control]\nenabled = true\n',
        encoding="utf-8",
    )
    tail = subprocess.Popen(
        [*ISO_HOST, "events", "tail", "--config", str(config), "--json", "--count", str(EVENTS_EXPECTED),
         "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tail.stderr is not None
        assert "subscribed to" in tail.stderr.readline()
        with serving(tmp_path, "--config", str(config)) as (address, _):
            sale = terminal(tmp_path, address, "sale", "12.34")
            assert sale.returncode == 0, sale.stdout + sale.stderr
            added = control(config, "add-scenario", "scenario.respond=05", "scenario.amount=13.13")
            assert added.returncode == 0, added.stderr
            declined = terminal(tmp_path, address, "sale", "13.13")
            assert declined.returncode == 1
            assert "05" in declined.stdout
            moved = control(config, "advance-clock", "seconds:=172800")
            assert moved.returncode == 0, moved.stderr
            first_stan = json.loads((tmp_path / "terminal.json").read_text())["items"][0]["stan"]
            void = terminal(tmp_path, address, "void", "--stan", first_stan)
            assert void.returncode == 1, void.stdout
            bad = control(config, "advance-clock", "seconds=two days")
            assert bad.returncode == 1
            assert "seconds" in bad.stderr
        out, _ = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    assert tail.returncode == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e.get("reason") or e.get("command")) for e in events] == [
        ("sale", "APPROVED"), ("control", "add-scenario"), ("sale", "FORCED_DECLINE"),
        ("control", "advance-clock"), ("void", "VOID_WINDOW_EXPIRED"),
    ]  # fmt: skip
    assert events[-1]["response_code"] == "12"
