"""`iso-host replay --junit` and `iso-host terminal run --junit` write one layout (terminal/junit.py): both reports,
made by running the commands against a host, parse to the same elements with the same attributes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iso_host.terminal.junit import ERROR, FAILURE, SKIPPED, Case, junit_tree

ISO_HOST = [sys.executable, "-m", "iso_host.cli.main"]
SESSION = """[session]
name = "layout"
[[steps]]
action = "sale"
amount = "12.34"
[[steps]]
action = "sale"
amount = "1.00"
expect = { "39" = "51" }
[[steps]]
action = "echo"
"""
SUITE_ATTRIBUTES = {"name", "tests", "failures", "errors", "skipped", "time"}
CASE_ATTRIBUTES = {"classname", "name", "time"}


@contextmanager
def host(cwd: Path, *flags: str) -> Iterator[str]:
    """`iso-host serve --port 0` in ``cwd``; its address once it listens; stopped (and its trace flushed) after."""
    process = subprocess.Popen([*ISO_HOST, "serve", "--port", "0", "--log-format", "json", *flags], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert process.stdout is not None
    try:
        for line in process.stdout:
            event = str(json.loads(line)["event"])
            if event.startswith("listening on "):
                yield event.removeprefix("listening on ")
                break
        else:
            raise AssertionError("the host never listened")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISO_HOST, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def layout(path: Path) -> list[tuple[str, frozenset[str]]]:
    """Each element's tag and attribute names, in document order: what two reports of one layout share."""
    return [(element.tag, frozenset(element.attrib)) for element in ET.parse(path).getroot().iter()]


def test_replay_and_session_reports_share_one_layout(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    (tmp_path / "session.toml").write_text(SESSION, encoding="utf-8")
    trace = tmp_path / "day.jsonl"
    with host(tmp_path / "first", "--trace", str(trace)) as address:
        session = run(tmp_path, "terminal", "--to", address, "--state", str(tmp_path / "t.json"), "run",
                      str(tmp_path / "session.toml"), "--junit", str(tmp_path / "session.xml"))  # fmt: skip
    assert session.returncode == 1, session.stdout + session.stderr  # the second step expected 51
    with host(tmp_path / "second") as address:
        replay = run(tmp_path, "replay", str(trace), "--to", address, "--junit", str(tmp_path / "replay.xml"))
    assert replay.returncode in (0, 1), replay.stderr
    for report in ("session.xml", "replay.xml"):
        root = ET.parse(tmp_path / report).getroot()
        assert root.tag == "testsuites", report
        (suite,) = root
        assert set(suite.attrib) == SUITE_ATTRIBUTES == set(root.attrib) | {"name"}, report
        cases = list(suite)
        assert cases, report
        assert all(case.tag == "testcase" and set(case.attrib) == CASE_ATTRIBUTES for case in cases), report
        assert suite.get("tests") == str(len(cases))
        assert all(len(case) <= 1 and {c.tag for c in case} <= {FAILURE, ERROR, SKIPPED} for case in cases), report
    session_tags = [(tag, attributes) for tag, attributes in layout(tmp_path / "session.xml")]
    assert ("failure", frozenset({"type", "message"})) in session_tags
    assert ("skipped", frozenset({"message"})) in session_tags
    assert layout(tmp_path / "replay.xml")[:3] == layout(tmp_path / "session.xml")[:3]


def test_counts_and_texts() -> None:
    failed = Case("c", "bad", FAILURE, 0.25, kind="difference", message="1 field(s) differ",
                  details="F39: expected '00', actual '51'")  # fmt: skip
    cases = [Case("c", "ok"), failed, Case("c", "broke", ERROR, kind="error", message="no such original"),
             Case("c", "later", SKIPPED)]  # fmt: skip
    root = junit_tree("suite", cases).getroot()
    (suite,) = root
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "4", "failures": "1", "errors": "1", "skipped": "1", "time": "0.250",
    }  # fmt: skip
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert (failure.get("type"), failure.text) == ("difference", "F39: expected '00', actual '51'")
