"""TLS and mutual TLS on the listener, with certificates from a throwaway CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hosting import TEST_PAN, local_now, running_host
from tls_material import TlsFiles, make_tls_files

from iso_host.errors import ConfigError
from iso_host.terminal.client import ClientError
from iso_host.tls import client_context, server_context


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path)


class TestTls:
    async def test_sale_over_tls(self, tmp_path: Path, tls_files: TlsFiles) -> None:
        """A terminal that trusts the CA completes a sale over TLS 1.2 or newer."""
        context = server_context(str(tls_files.server_cert), str(tls_files.server_key))
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        async with running_host(tmp_path, "iso87binary", ssl_context=context) as host:
            client = host.client()
            await client.connect(*host.address, ssl_context=client_context(str(tls_files.ca)))
            async with client:
                response = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN))
            assert response.fields["39"] == "00"
            assert len(host.ledger_rows()) == 1

    async def test_plaintext_client_is_refused(self, tmp_path: Path, tls_files: TlsFiles) -> None:
        """A terminal that speaks plain ISO 8583 to a TLS port gets no answer and is disconnected."""
        context = server_context(str(tls_files.server_cert), str(tls_files.server_key))
        async with running_host(tmp_path, "iso87binary", ssl_context=context) as host:
            client = host.client()
            await client.connect(*host.address)
            async with client:
                with pytest.raises(ClientError):
                    await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN), timeout_s=5)
            assert host.ledger_rows() == []

    async def test_mutual_tls(self, tmp_path: Path, tls_files: TlsFiles) -> None:
        """With a client CA, only terminals presenting a certificate from that CA get through."""
        context = server_context(str(tls_files.server_cert), str(tls_files.server_key), str(tls_files.ca))
        async with running_host(tmp_path, "cup", ssl_context=context) as host:
            outcomes = []
            for cert, key in ((tls_files.client_cert, tls_files.client_key), (None, None),
                              (tls_files.stranger_cert, tls_files.stranger_key)):  # fmt: skip
                client = host.client()
                tls = client_context(str(tls_files.ca), str(cert) if cert else None, str(key) if key else None)
                try:
                    await client.connect(*host.address, ssl_context=tls)
                    async with client:
                        response = await client.request(client.build("echo", local_now()), timeout_s=5)
                        outcomes.append(response.fields["39"])
                except (ClientError, ConnectionError):
                    outcomes.append("refused")
            assert outcomes == ["00", "refused", "refused"]

    async def test_a_terminal_bound_to_a_certificate_subject(self, tmp_path: Path, tls_files: TlsFiles) -> None:
        """Issue 14: a terminal with tls_subject answers only on a connection whose client certificate has that
        subject; the test client's certificate (CN=localhost) signs on as TERM0001 (bound to it) but not as
        TERM0002 (bound to CN=TERM0002): UNKNOWN_TERMINAL (03), no keys. Without a certificate: the same."""
        context = server_context(str(tls_files.server_cert), str(tls_files.server_key), str(tls_files.ca))
        async with running_host(tmp_path, "iso87binary", ssl_context=context) as host:
            host.host.terminals["TERM0001"].tls_subject = "CN=localhost"
            host.host.terminals["TERM0002"].tls_subject = "CN=TERM0002"
            answers = []
            for tid in ("TERM0001", "TERM0002"):
                client = host.client(tid)
                tls = client_context(str(tls_files.ca), str(tls_files.client_cert), str(tls_files.client_key))
                await client.connect(*host.address, ssl_context=tls)
                async with client:
                    response = await client.request(client.build("signon", local_now()), timeout_s=5)
                answers.append((response.fields["39"], "48" in response.fields))
            assert answers == [("00", True), ("03", False)]
        async with running_host(tmp_path, "iso87binary") as host:
            host.host.terminals["TERM0001"].tls_subject = "CN=localhost"
            async with await host.connected_client(signon=False) as client:
                assert (await client.request(client.build("signon", local_now()))).fields["39"] == "03"

    def test_missing_certificate_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A TLS file that cannot be loaded stops the host with a ConfigError naming the setting."""
        with pytest.raises(ConfigError, match=r"server\.tls_cert"):
            server_context(str(tmp_path / "nope.pem"), str(tmp_path / "nope.key"))
