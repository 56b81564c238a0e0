"""Every file `iso-host dialects` and docs/architecture.md cite is in the repository (not beside it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTENSIONS = r"(?:py|md|toml|json|jsonl|html|js|css)"
# A path in backticks: no spaces, ending in a file extension or in "/" (a directory); globs allowed.
BACKTICKED = re.compile(rf"`([\w.*/-]+(?:\.{EXTENSIONS}|/))`")
BARE = re.compile(rf"(?<![\w`/.-])([\w./-]*[\w-]\.{EXTENSIONS})\b(?![`\w])")  # outside backticks, e.g. CUP.md
# Where a cited path may be written relative to: the checkout, the package (architecture.md's module table).
BASES = (ROOT, ROOT / "iso_host")
SEARCHED = ("iso_host", "tests", "tools", "docs", "specs", "examples")  # where a bare file name may live


def resolves(cited: str) -> bool:
    """Whether ``cited`` names something in the checkout: relative to a base, as a glob there, or (a bare name,
    as the module table writes the files of the package a row is about) a file of that name in the repository."""
    if cited.startswith(("/", "..")):
        return False
    for base in BASES:
        if (base / cited).exists() or (("*" in cited) and any(base.glob(cited))):
            return base.resolve() in (base / cited).resolve().parents or "*" in cited
    if "/" not in cited.rstrip("/"):
        return any(any((ROOT / top).rglob(cited.rstrip("/"))) for top in SEARCHED)
    return any(any((ROOT / top).rglob(cited)) for top in SEARCHED)


def cited_paths(text: str) -> set[str]:
    return set(BACKTICKED.findall(text)) | set(BARE.findall(BACKTICKED.sub("", text)))


def test_architecture_cites_only_files_in_the_repository() -> None:
    cited = cited_paths((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    assert "ledger/reports.py" in cited
    assert "specs/*.toml" in cited
    assert sorted(path for path in cited if not resolves(path)) == []


def test_dialects_cite_only_files_in_the_repository() -> None:
    result = subprocess.run([sys.executable, "-m", "iso_host.cli.main", "dialects"], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    cited = cited_paths(result.stdout)
    assert "docs/dialects.md" in cited
    assert sorted(path for path in cited if not resolves(path)) == []


def test_outside_the_repository_does_not_count() -> None:
    assert not resolves("../shared/DESIGN.md")
    assert not resolves("CUP.md")
    assert cited_paths("as CUP.md has them; `../shared/tools/x.py`") == {"CUP.md", "../shared/tools/x.py"}
