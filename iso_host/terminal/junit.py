"""The one JUnit XML layout `iso-host replay --junit` and `iso-host terminal run --junit` write.

``<testsuites>`` holding one ``<testsuite>`` (name, tests, failures, errors, skipped, time), one ``<testcase>``
(classname, name, time) per request or step, with at most one ``<failure>``, ``<error>`` (type, message, and the
details as text) or ``<skipped>`` (message) in it; indented, UTF-8 with a declaration. Messages are what the
commands print: masked, never a secret.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from iso_host.errors import ConfigError

PASSED: Final = "passed"
FAILURE: Final = "failure"
ERROR: Final = "error"
SKIPPED: Final = "skipped"
OUTCOMES: Final = (PASSED, FAILURE, ERROR, SKIPPED)


@dataclass(frozen=True, slots=True)
class Case:
    """One testcase: a replayed request or a session's step."""

    classname: str
    name: str
    outcome: str = PASSED
    seconds: float = 0.0
    kind: str = ""  # the failure's or error's type (difference, no-reply, failed, error)
    message: str = ""
    details: str = ""  # the element's text: one line per difference

    def __post_init__(self) -> None:
        assert self.outcome in OUTCOMES, self.outcome
        assert self.seconds >= 0


def junit_tree(suite: str, cases: Sequence[Case]) -> ET.ElementTree:
    counts = {outcome: sum(case.outcome == outcome for case in cases) for outcome in OUTCOMES}
    totals = {
        "tests": str(len(cases)), "failures": str(counts[FAILURE]), "errors": str(counts[ERROR]),
        "skipped": str(counts[SKIPPED]), "time": f"{sum(case.seconds for case in cases):.3f}",
    }  # fmt: skip
    root = ET.Element("testsuites", totals)
    element = ET.SubElement(root, "testsuite", {"name": suite, **totals})
    for case in cases:
        attributes = {"classname": case.classname, "name": case.name, "time": f"{case.seconds:.3f}"}
        testcase = ET.SubElement(element, "testcase", attributes)
        if case.outcome == SKIPPED:
            ET.SubElement(testcase, SKIPPED, {"message": case.message})
        elif case.outcome != PASSED:
            ET.SubElement(testcase, case.outcome, {"type": case.kind, "message": case.message}).text = (
                case.details or None
            )
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: Path, suite: str, cases: Sequence[Case]) -> None:
    """Write the report to ``path``.

    Raises:
        ConfigError: ``path`` cannot be written (one line naming it).
    """
    try:
        junit_tree(suite, cases).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as error:
        raise ConfigError(f"--junit: cannot write {path}: {error.strerror or error}") from None
