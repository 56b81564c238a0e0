"""Helpers that run the `iso-host` command as a newcomer would: separate processes over a real socket."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ISO_HOST = [sys.executable, "-m", "iso_host.cli.main"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@contextmanager
def serving(tmp_path: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start ``iso-host serve --port 0`` and yield its address once it prints ``listening on``."""
    process = subprocess.Popen(
        [*ISO_HOST, "serve", "--port", "0", "--log-format", "json", *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    address = None
    for _ in range(50):
        line = process.stdout.readline()
        if not line:
            break
        event = json.loads(line)["event"]
        if event.startswith("listening on "):
            address = event.removeprefix("listening on ")
            break
    try:
        assert address is not None, f"no 'listening on' line; stderr: {process.stderr.read() if process.stderr else ''}"
        yield address, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)  # also closes the pipes


def terminal(tmp_path: Path, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`iso-host terminal --to ADDRESS --state TMP/terminal.json ARGS`."""
    return subprocess.run(
        [*ISO_HOST, "terminal", "--to", address, "--state", str(tmp_path / "terminal.json"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
