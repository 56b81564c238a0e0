"""README.md keeps telling a newcomer the two commands, and CI runs the one it gives for the tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_COMMAND = "python -m pip install -e . && iso-host serve"
TEST_COMMAND = "python -m pip install -e '.[test]' && python -m pytest"


def test_readme_gives_both_commands() -> None:
    """The README names the install-and-run command and the install-and-test command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert RUN_COMMAND in readme
    assert TEST_COMMAND in readme


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` calls exactly the test command README.md gives."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci.splitlines()
