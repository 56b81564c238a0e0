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
START_LINES = 50  # log lines a host may print before "listening on"


@contextmanager
def started(
    cwd: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str], list[dict[str, object]]]]:
    """Start ``iso-host serve --port 0`` in ``cwd``; yield its address once it prints ``listening on``, the process
    and the log lines before that one; stop it afterwards."""
    process = subprocess.Popen(
        [*ISO_HOST, "serve", "--port", "0", "--log-format", "json", *extra],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[dict[str, object]] = []
    address = None
    for _ in range(START_LINES):
        line = process.stdout.readline()
        if not line:
            break
        lines.append(json.loads(line))
        if str(lines[-1]["event"]).startswith("listening on "):
            address = str(lines[-1]["event"]).removeprefix("listening on ")
            break
    try:
        assert address is not None, f"no 'listening on' line; stderr: {process.stderr.read() if process.stderr else ''}"
        yield address, process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)  # also closes the pipes


@contextmanager
def serving(tmp_path: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start ``iso-host serve --port 0`` and yield its address once it prints ``listening on``."""
    with started(tmp_path, *extra) as (address, process, _):
        yield address, process


def terminal(tmp_path: Path, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`iso-host terminal --to ADDRESS --state TMP/terminal.json ARGS`."""
    return subprocess.run(
        [*ISO_HOST, "terminal", "--to", address, "--state", str(tmp_path / "terminal.json"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
