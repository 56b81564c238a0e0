"""TLS contexts for the listener and the terminal client: TLS 1.2 or newer, optionally mutual."""

from __future__ import annotations

import ssl
from typing import Any

from iso_host.errors import ConfigError


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A listener context; with ``client_ca`` every client must present a certificate that CA signed.

    Raises:
        ConfigError: a file is missing or is not a usable PEM certificate or key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"server.tls_cert / server.tls_key: cannot load {cert} with {key}: {error}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"server.tls_client_ca: cannot load {client_ca}: {error}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: str | None = None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A terminal's context: verifies the host against ``ca`` (or the system store) and may present a certificate.

    Raises:
        ConfigError: a file is missing or unusable.
    """
    context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"--tls-cert / --tls-key: cannot load {cert}: {error}") from None
    return context


def certificate_subject(peercert: Any) -> str | None:
    """A verified client certificate's subject as ``CN=TERM0001,O=Acme`` (its attributes in the certificate's order,
    short names where Python gives them), or None without one (plain TCP, or TLS that is not mutual)."""
    if not isinstance(peercert, dict) or not peercert.get("subject"):
        return None
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
             "localityName": "L", "stateOrProvinceName": "ST", "serialNumber": "serialNumber"}  # fmt: skip
    return ",".join(f"{short.get(name, name)}={value}" for rdn in peercert["subject"] for name, value in rdn)
