"""The console's browser tests' host: a real `iso-host serve` with its console, and the `iso-host terminal` command
against it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

ISO_HOST = [sys.executable, "-m", "iso_host.cli.main"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots (gitignored)
START_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 30.0
UI_TIMEOUT_MS = 10_000  # a selector the page should show within this; a deadline for broken runs, not a sleep
PAN = "4761739001010010"  # the terminal command's default card, a [[cards]] test card below
MASKED_PAN = "476173******0010"

HOST_CONFIG = f"""
[http]
control = true

[[terminals]]
tid = "TERM0001"
mid = "MERCHANT0000001"
tmk = "0123456789ABCDEFFEDCBA9876543210"

[[cards]]
pan = "{PAN}"
pin = "1234"
balance = 1000.00
"""


class Host:
    """`iso-host serve` in its own process: the ISO 8583 address, the console's URL, and every JSON log line."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        config = workdir / "host.toml"
        config.write_text(HOST_CONFIG, encoding="utf-8")
        self.process = subprocess.Popen(
            [*ISO_HOST, "serve", "--config", str(config), "--port", "0", "--http", "127.0.0.1:0",
             "--ledger", f"sqlite:///{workdir / 'ledger.db'}", "--log-format", "json"],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)  # keeps the pipe drained while tests run
        self._reader.start()
        self.address = self._event_after("listening on ")
        self.url = self._event_after("console on ")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                parsed = {"event": line.rstrip("\n")}
            with self._changed:
                self.lines.append(parsed if isinstance(parsed, dict) else {"event": str(parsed)})
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _event_after(self, prefix: str) -> str:
        """What follows ``prefix`` in the first log line whose event starts with it."""

        def found() -> str | None:
            for line in self.lines:
                event = str(line.get("event", ""))
                if event.startswith(prefix):
                    return event.removeprefix(prefix).split()[0]
            return None

        with self._changed:
            ended = self._changed.wait_for(lambda: found() is not None or self.process.poll() is not None,
                                           timeout=START_TIMEOUT_S)  # fmt: skip
            value = found()
        if value is None:
            self.stop()
            stderr = self.process.stderr.read() if self.process.stderr else ""
            why = "exited" if ended else f"said nothing in {START_TIMEOUT_S:g} s"
            pytest.fail(f"iso-host serve printed no '{prefix}...' line ({why}); log: {self.lines[-5:]}; "
                        f"stderr: {stderr}")  # fmt: skip
        return value

    def terminal(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`iso-host terminal --to ADDRESS --state WORKDIR/terminal.json ARGS` (one terminal for the whole module)."""
        return subprocess.run(
            [*ISO_HOST, "terminal", "--to", self.address, "--state", str(self.workdir / "terminal.json"), *args],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False, cwd=self.workdir,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def field(output: str, number: int) -> str:
    """A field's value in the response `iso-host terminal` prints (``F11   System Trace Audit Number   000001``)."""
    found = re.search(rf"^F{number}\s.*?\s(\S+)$", output, re.MULTILINE)
    assert found, f"no F{number} in the terminal's output:\n{output}"
    return found.group(1)
