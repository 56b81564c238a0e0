"""`iso-host certs DIR` as README's "TLS in five minutes" uses it: the files it writes make a mutual TLS sale work
between `serve` and `terminal`, and every handshake that fails leaves a host log line with its reason."""

from __future__ import annotations

import json
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from processes import ISO_HOST, started, terminal
from waiting import until_blocking

from iso_host.cli.certs import FILES


def certs(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISO_HOST, "certs", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_writes_private_files_and_says_how_to_use_them(tmp_path: Path) -> None:
    result = certs(tmp_path, "tls")
    assert (result.returncode, result.stderr) == (0, "")
    directory = tmp_path / "tls"
    assert sorted(p.name for p in directory.iterdir()) == sorted(FILES)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE((directory / name).stat().st_mode) for name in FILES} == {0o600}
    serve = "iso-host serve --tls-cert tls/server.pem --tls-key tls/server.key --tls-client-ca tls/ca.pem"
    assert serve in result.stdout
    assert ("iso-host terminal --tls --tls-ca tls/ca.pem --tls-cert tls/client.pem --tls-key tls/client.key"
            in result.stdout)  # fmt: skip
    assert 'tls_subject = "CN=TERM0001"' in result.stdout


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert certs(tmp_path, "tls").returncode == 0
    before = (tmp_path / "tls" / "ca.pem").read_bytes()
    again = certs(tmp_path, "tls")
    assert again.returncode == 2
    assert again.stderr.startswith("iso-host: tls: ca.pem, ca.key, ")
    assert again.stderr.endswith("exist; --force replaces them\n")
    assert (tmp_path / "tls" / "ca.pem").read_bytes() == before
    assert certs(tmp_path, "tls", "--force").returncode == 0
    assert (tmp_path / "tls" / "ca.pem").read_bytes() != before


@pytest.mark.parametrize("args", [["--days", "0"], ["--tid", ""]])
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str]) -> None:
    result = certs(tmp_path, "tls", *args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "tls").exists()


class HostLog:
    """The JSON lines a running host prints after its `listening on` line, collected by a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[dict[str, object]] = []
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: [self.lines.append(json.loads(line)) for line in stream], daemon=True).start()

    def events(self, name: str) -> list[dict[str, object]]:
        return [line for line in list(self.lines) if line["event"] == name]


def test_mutual_tls_sale_and_failed_handshakes_logged(tmp_path: Path) -> None:
    """The README recipe: certs, serve with them, a terminal with its client certificate sells (00). Then a plaintext
    terminal, one with a certificate of another CA, one with none and one that does not trust the host each fail, and
    each leaves a tls_handshake_failed line with its own reason."""
    assert certs(tmp_path, "tls").returncode == 0
    assert certs(tmp_path, "other").returncode == 0
    tls = [str(tmp_path / "tls" / name) for name in ("server.pem", "server.key", "ca.pem")]
    serve_flags = ["--tls-cert", tls[0], "--tls-key", tls[1], "--tls-client-ca", tls[2]]

    def flags(ca: str, client: str | None) -> list[str]:
        pair = ["--tls-cert", f"{tmp_path}/{client}/client.pem", "--tls-key", f"{tmp_path}/{client}/client.key"]
        return ["--tls", "--tls-ca", f"{tmp_path}/{ca}/ca.pem", *(pair if client else [])]

    with started(tmp_path, *serve_flags) as (address, process, _):
        log = HostLog(process)
        sale = terminal(tmp_path, address, *flags("tls", "tls"), "sale", "12.34")
        assert sale.returncode == 0, sale.stdout + sale.stderr
        assert "00" in sale.stdout
        failures = {
            "plaintext": [], "another CA's client certificate": flags("tls", "other"),
            "no client certificate": flags("tls", None), "the host's certificate untrusted": flags("other", "tls"),
        }  # fmt: skip
        for case, case_flags in failures.items():
            seen = len(log.events("tls_handshake_failed"))
            result = terminal(tmp_path, address, *case_flags, "echo")
            assert result.returncode == 2, f"{case}: {result.stdout} {result.stderr}"
            until_blocking(lambda seen=seen: len(log.events("tls_handshake_failed")) > seen,
                           what=f"a tls_handshake_failed line for a terminal with {case}")  # fmt: skip
    lines = log.events("tls_handshake_failed")
    assert len(lines) == len(failures)
    assert all(line["why"] and line["peer"] for line in lines), lines
    whys = [str(line["why"]) for line in lines]
    assert len(set(whys)) == len(failures), whys
    assert "CERTIFICATE_VERIFY_FAILED" in whys[1]  # OpenSSL's reasons, as the host logs them
    assert "CERTIFICATE" in whys[2]
