"""`iso-host terminal run SESSION.toml`: scripted sessions against `iso-host serve`, as separate processes."""

from __future__ import annotations

import json
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from databases import fresh_postgres_database
from processes import EXAMPLES, ISO_HOST, serving

TEST_PAN = "4761739001010010"




def run_session(tmp_path: Path, address: str, session: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`iso-host terminal --to ADDRESS --state TMP run SESSION [ARGS]` (the dialect comes from the file)."""
    return subprocess.run(
        [*ISO_HOST, "terminal", "--to", address, "--state", str(tmp_path / "terminal.json"), "run", str(session),
         *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def write_session(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "session.toml"
    path.write_text(text, encoding="utf-8")
    return path


def junit_cases(path: Path) -> list[ET.Element]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root
    cases = list(suite.iter("testcase"))
    assert suite.get("tests") == str(len(cases))
    return cases


def read_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


# The session files under examples/ (the others there are host configuration files; NAME.host.toml is the host
# that NAME.toml runs against).
SESSIONS = [path for path in sorted(EXAMPLES.glob("*.toml")) if "steps" in read_toml(path)]


def run_example(tmp_path: Path, example: Path, *serve_args: str) -> None:
    """The session passes against `iso-host serve` of its dialect (and its NAME.host.toml, when one is beside it):
    exit 0, a line per step, a JUnit case per step."""
    document = read_toml(example)
    dialect, steps = document.get("session", {}).get("dialect", "iso87binary"), len(document["steps"])
    host_config = example.with_suffix(".host.toml")  # the host a session needs, beside it (a chip card's key)
    configured = ("--config", str(host_config)) if host_config.is_file() else ()
    with serving(tmp_path, "--dialect", dialect, *configured, *serve_args) as (address, _):
        result = subprocess.run(
            [*ISO_HOST, "terminal", "--to", address, "--dialect", dialect, "--state", str(tmp_path / "terminal.json"),
             "run", str(example), "--junit", str(tmp_path / "report.xml")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    passed = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert len(passed) == steps
    assert all(line.endswith(" ms") for line in passed)
    assert TEST_PAN not in result.stdout
    cases = junit_cases(tmp_path / "report.xml")
    assert len(cases) == steps
    assert all(len(case) == 0 for case in cases), "no failure, error or skipped element"


def ledger_verifies(ledger: str) -> None:
    """`iso-host ledger verify` finds every invariant holding after the session."""
    verify = subprocess.run([*ISO_HOST, "ledger", "verify", "--ledger", ledger], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("example", SESSIONS, ids=lambda path: path.stem)
def test_example_session_passes(tmp_path: Path, example: Path) -> None:
    """Every session under examples/ passes against `iso-host serve` of its dialect, and the ledger verifies."""
    run_example(tmp_path, example)
    ledger_verifies(f"sqlite:///{tmp_path}/iso-host.db")


def test_the_emv_day_on_postgresql(tmp_path: Path) -> None:
    """The whole EMV terminal day (chip sale, pre-auth and completion, QR, offline, void, settlement and chip
    upload) against a host on a PostgreSQL ledger; `ledger verify` passes after it."""
    with fresh_postgres_database() as url:
        run_example(tmp_path, EXAMPLES / "emv-day-cup.toml", "--ledger", url)
        ledger_verifies(url)


def test_examples_cover_a_business_day_per_dialect() -> None:
    """The shipped sessions: a business day for iso87binary and for cup, and the error cases; a README."""
    names = {path.name for path in SESSIONS}
    assert {"business-day-iso87.toml", "business-day-cup.toml", "echo-and-errors.toml"} <= names
    for name in ("business-day-iso87.toml", "business-day-cup.toml"):
        actions = {step["action"] for step in read_toml(EXAMPLES / name)["steps"]}
        assert {"sale", "void", "reversal", "refund", "settle"} <= actions
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert all(name in readme for name in names)


FAILING = f"""
[session]
name = "failing"

[[steps]]
name = "approved sale"
action = "sale"
amount = "1.00"
expect = {{ "39" = "00" }}

[[steps]]
name = "wrong card"
action = "sale"
amount = "2.00"
expect = {{ "39" = "00", "2" = "{TEST_PAN[:-1]}9" }}

[[steps]]
action = "echo"
"""


def test_failed_expectation_exits_1_naming_step_and_field(tmp_path: Path) -> None:
    """The first failed expectation stops the run: exit 1, one line with the step, field, expected and actual."""
    with serving(tmp_path) as (address, _):
        result = run_session(tmp_path, address, write_session(tmp_path, FAILING), "--junit", str(tmp_path / "r.xml"))
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line == "FAIL steps[1] sale 'wrong card': field 2: expected '476173******0019', got '476173******0010'"
    assert TEST_PAN not in result.stdout + result.stderr
    assert "steps[0] sale 'approved sale'" in result.stdout
    assert "steps[2]" not in result.stdout, "nothing runs after a failure"
    first, second, third = junit_cases(tmp_path / "r.xml")
    assert len(first) == 0
    (failure,) = second
    assert failure.tag == "failure"
    assert "field 2" in (failure.get("message") or "")
    assert [element.tag for element in third] == ["skipped"]


def test_step_error_exits_1_with_an_error_element(tmp_path: Path) -> None:
    """A step that cannot run (no such original in the terminal's batch) fails the run like an expectation."""
    text = '[[steps]]\naction = "void"\nrrn = "000000000999"\n\n[[steps]]\naction = "echo"\n'
    session = write_session(tmp_path, text)
    with serving(tmp_path) as (address, _):
        result = run_session(tmp_path, address, session, "--junit", str(tmp_path / "r.xml"))
    assert result.returncode == 1
    assert result.stderr.startswith("FAIL steps[0] void: error: ")
    assert "no sale with RRN 000000000999" in result.stderr
    first, second = junit_cases(tmp_path / "r.xml")
    assert [element.tag for element in first] == ["error"]
    assert [element.tag for element in second] == ["skipped"]


CAPTURES = """
[[steps]]
action = "sale"
amount = "12.34"
capture = { first_rrn = "37" }

[[steps]]
action = "sale"
amount = "5.00"
capture = { second_stan = "11", second_rrn = "37" }

[[steps]]
name = "void by the captured RRN"
action = "void"
rrn = "{first_rrn}"
expect = { "39" = "00", "37" = { regex = '^\\d{12}$' } }

[[steps]]
name = "reverse by the captured STAN"
action = "reversal"
stan = "{second_stan}"
expect = { "39" = "00", "11" = "{second_stan}" }
"""


def test_captures_flow_into_later_steps(tmp_path: Path) -> None:
    """A captured RRN names the original of a void, a captured STAN that of a reversal and an expected value."""
    with serving(tmp_path) as (address, _):
        result = run_session(tmp_path, address, write_session(tmp_path, CAPTURES))
    assert result.returncode == 0, result.stdout + result.stderr
    items = json.loads((tmp_path / "terminal.json").read_text())["items"]
    assert [(item["kind"], item["status"]) for item in items] == [
        ("sale", "voided"),
        ("sale", "reversed"),
        ("void", "approved"),
    ]
    listing = subprocess.run(
        [*ISO_HOST, "ledger", "list", "--json", "--ledger", f"sqlite:///{tmp_path / 'iso-host.db'}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [(row["kind"], row["status"]) for row in rows] == [
        ("sale", "VOIDED"),
        ("sale", "REVERSED"),
        ("void", "APPROVED"),
        ("reversal", "APPROVED"),
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param('[[steps]]\naction = "sale"\namount = "1.00"\nexpect = { "39" = { equal = "00" } }\n',
                     "steps[0].expect.39", id="unknown-check"),
        pytest.param('[[steps]]\naction = "echo"\n\n[[steps]]\naction = "void"\nrrn = "{rrn}"\n',
                     "steps[1].rrn: {rrn} is not captured by an earlier step", id="uncaptured-placeholder"),
        pytest.param('[[steps]]\naction = "refund"\namount = "1.005"\nstan = "000001"\n', "steps[0].amount",
                     id="bad-amount"),
        pytest.param('[[steps]]\naction = "void"\n', "steps[0].stan", id="void-without-original"),
        pytest.param('[[steps]]\naction = "dance"\n', "steps[0].action", id="unknown-action"),
        pytest.param('[[steps]]\naction = "echo"\ncapture = { rrn = "999" }\n', "steps[0].capture.rrn",
                     id="bad-capture-field"),
        pytest.param('[session]\ncolour = "red"\n[[steps]]\naction = "echo"\n', "session.colour", id="unknown-key"),
        pytest.param('[[steps]]\naction = "echo"\nexpect = { "60.9" = "1" }\n', "no sub-field 60.9", id="sub-field"),
        pytest.param("[[steps]\n", "not valid TOML", id="not-toml"),
    ],
)  # fmt: skip
def test_malformed_session_exits_2_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    """A bad session file is refused before any connection (no host here): exit 2, a line naming file and key."""
    result = run_session(tmp_path, "127.0.0.1:1", write_session(tmp_path, text))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"iso-host: {tmp_path / 'session.toml'}: ")
    assert key in line
    assert result.stdout == ""
