"""A DUKPT terminal on a dialect without a KSN field is refused at start, with one line naming the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

from processes import ISO_HOST

DUKPT_TERMINAL = '[[terminals]]\ntid = "DUKPT001"\nmid = "MERCHANT0000001"\nbdk = "0123456789ABCDEFFEDCBA9876543210"\n'


def test_a_dukpt_terminal_needs_a_dialect_with_a_ksn_field(tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    config.write_text(DUKPT_TERMINAL)
    result = subprocess.run([*ISO_HOST, "serve", "--config", str(config), "--dialect", "iso87ascii", "--port", "0"],
                            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "iso-host: terminals[0].bdk: dialect iso87ascii has no KSN field for a DUKPT terminal"
        " (iso87binary and iso87ascii-dukpt have one)"
    ]
    assert not (tmp_path / "iso-host.db").exists(), "nothing is opened or written"
    assert "0123456789ABCDEF" not in result.stderr
