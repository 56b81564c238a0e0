"""README.md walked top to bottom as a newcomer would: every command block of the walk-through sections run in order,
in an empty directory with a fresh HOME (a "README doctest"), so that a broken walk-through fails CI.

How a block is read:
- `iso-host serve ...` (with or without `&`: README runs hosts in a shell of their own), and the run command of "Two
  commands", start a host in the background; a host started before it is stopped first, as README tells a newcomer to
  stop one host before starting another on the same port.
- Every other line runs in bash. It must exit 1 when its comment says the host declines (`F39 58: ...`, `...: 05`,
  `declined`, `exit 1`), else 0. No line may print a traceback.
- A comment line `# stop the host ...` stops the hosts started so far (as the newcomer's Ctrl-C).
- A heredoc (`cat > FILE <<'EOF'` ... `EOF`) is one command, and so is a line continued with a backslash.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from waiting import until_blocking

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
WALKED = ("Two commands", "Try a sale", "TLS in five minutes", "Decode a frame or a trace")  # in README's order
# A comment that says the host declines: "F39 58: ...", "...: 05", "declined", "exit 1" (not "exit 1 with ...", which
# says when it would)
DECLINES = re.compile(r"F39 (?:[1-9]\d|0[1-9])\b|: 05\b|\bdeclined\b|\bexit 1\b(?! with)")
RUN_COMMAND = "python -m pip install -e . && iso-host serve"
TEST_COMMAND = "python -m pip install -e '.[test]' && python -m pytest"  # CI runs it; here it would run itself
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class Command:
    section: str
    text: str  # what bash runs
    comment: str
    background: bool
    stop: bool = False  # "# stop the host ...": the hosts started so far are stopped here

    @property
    def expected_exit(self) -> int:
        return 1 if DECLINES.search(self.comment) else 0


def _split_comment(line: str) -> tuple[str, str]:
    """A line's command and its trailing ``# comment`` (a # inside quotes is the command's)."""
    quote = None
    for index, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote == char else char
        elif char == "#" and quote is None and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


def walkthrough(text: str) -> list[Command]:
    """The commands of the walked sections' ``sh`` blocks, in order."""
    commands: list[Command] = []
    section = ""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith(("## ", "### ")):
            section = line.lstrip("#").strip()
        if line.strip() != "```sh" or not any(section.startswith(name) for name in WALKED):
            continue
        for block_line in lines:
            if block_line.strip() == "```":
                break
            whole = block_line
            while whole.endswith("\\"):  # a command continued on the next line
                whole = whole[:-1] + next(lines).strip()
            command, comment = _split_comment(whole)
            if not command:
                if comment.startswith("stop the host"):
                    commands.append(Command(section, "", comment, background=False, stop=True))
                continue
            if "<<'EOF'" in command:
                body = [command]
                for heredoc_line in lines:
                    body.append(heredoc_line)
                    if heredoc_line.strip() == "EOF":
                        break
                commands.append(Command(section, "\n".join(body), comment, background=False))
                continue
            if command == TEST_COMMAND:
                continue
            if command == RUN_COMMAND:
                commands.append(Command(section, "iso-host serve", comment, background=True))
                continue
            background = command.endswith("&") or command.startswith("iso-host serve")
            commands.append(Command(section, command.removesuffix("&").strip(), comment, background))
    return commands


class Walk:
    """The newcomer's shell: an empty directory, a fresh HOME, the hosts it started."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = dict(os.environ, HOME=str(directory / "home"),
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # fmt: skip
        self.env.pop("ISO_HOST_PAN_KEY", None)  # as on a fresh machine: the host makes its key file
        (directory / "home").mkdir()
        self.hosts: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, command: Command) -> None:
        self.stop_hosts()
        log = self.directory / f"host-{len(self.hosts)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(["bash", "-c", f"exec {command.text}"], cwd=self.directory, env=self.env,
                                       stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        self.hosts.append((process, log))
        until_blocking(lambda: "listening on" in log.read_text(errors="replace") or process.poll() is not None,
                       what=f"{command.text!r} listening", timeout_s=START_TIMEOUT_S)  # fmt: skip
        assert process.poll() is None, f"{command.section}: {command.text!r} did not start:\n{log.read_text()}"

    def run(self, command: Command) -> None:
        done = subprocess.run(["bash", "-c", command.text], cwd=self.directory, env=self.env, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S, check=False)  # fmt: skip
        shown = f"{command.section}: {command.text!r} exited {done.returncode}:\n{done.stdout[-1500:]}{done.stderr}"
        assert "Traceback" not in done.stdout + done.stderr, shown
        assert done.returncode == command.expected_exit, shown

    def stop_hosts(self) -> None:
        for process, log in self.hosts:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            assert "Traceback" not in log.read_text(errors="replace"), log.read_text()
        self.hosts.clear()


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    shell = Walk(tmp_path)
    try:
        yield shell
    finally:
        shell.stop_hosts()


def test_the_walkthrough_has_its_sections() -> None:
    sections = {command.section.split(" (")[0] for command in walkthrough(README.read_text(encoding="utf-8"))}
    assert {"Two commands", "Try a sale"} <= sections


@pytest.mark.skipif(shutil.which("bash") is None, reason="the walk-through is shell")
def test_readme_walkthrough_runs_in_order(walk: Walk) -> None:
    """Every command block of README's walk-through, in order, on a fresh HOME and an empty directory."""
    commands = walkthrough(README.read_text(encoding="utf-8"))
    assert len(commands) > 20
    for command in commands:
        if command.stop:
            walk.stop_hosts()
        elif command.background:
            walk.start(command)
        else:
            walk.run(command)
