"""`iso-host certs DIR`: test certificates for TLS and mutual TLS, made with ``cryptography``.

A CA (its key kept beside it, for signing more), a server certificate for ``localhost`` and ``127.0.0.1`` and a
client certificate whose subject is ``CN=<TID>`` (what ``[[terminals]] tls_subject`` names), each with its key;
every file 0600, the directory 0700 when made. Then the flags that use them. Test material only: the keys are
not protected by a passphrase.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import shlex
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iso_host.cli.exit_codes import EXIT_OK
from iso_host.config import DEMO_TID
from iso_host.errors import ConfigError
from iso_host.private_files import private_dir, write_private

FILES: Final = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
DEFAULT_DAYS: Final = 365
MAX_DAYS: Final = 3650
CLOCK_SKEW: Final = datetime.timedelta(minutes=5)  # valid a little before now: a terminal whose clock lags accepts it
SERVER_NAMES: Final = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))


Key = ec.EllipticCurvePrivateKey


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Key) -> bytes:
    unencrypted = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, unencrypted)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key: Key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)  # fmt: skip


def make_certificates(directory: Path, tid: str, days: int) -> dict[str, bytes]:
    """The six PEM files by name (``FILES``): CA, server (localhost, 127.0.0.1) and client (``CN=tid``)."""
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca_name = _name(f"iso-host test CA ({directory.name or 'certs'})")
    ca = (
        _builder(ca_name, ca_name, ca_key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())

    def leaf(common_name: str, key: Key, usage: x509.ObjectIdentifier) -> x509.Certificate:
        builder = (
            _builder(_name(common_name), ca_name, key, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(authority, critical=False)
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(SERVER_NAMES)), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    server = leaf("localhost", server_key, ExtendedKeyUsageOID.SERVER_AUTH)
    client = leaf(tid, client_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    return {
        "ca.pem": ca.public_bytes(pem), "ca.key": _key_pem(ca_key),
        "server.pem": server.public_bytes(pem), "server.key": _key_pem(server_key),
        "client.pem": client.public_bytes(pem), "client.key": _key_pem(client_key),
    }  # fmt: skip


def usage_lines(directory: Path, tid: str) -> list[str]:
    """What to run with the files, paths quoted for a shell."""

    def path(name: str) -> str:
        return shlex.quote(str(directory / name))

    return [
        f"serve:    iso-host serve --tls-cert {path('server.pem')} --tls-key {path('server.key')}"
        f" --tls-client-ca {path('ca.pem')}",
        f"terminal: iso-host terminal --tls --tls-ca {path('ca.pem')} --tls-cert {path('client.pem')}"
        f" --tls-key {path('client.key')} sale 12.34",
        f'config:   [server] tls_cert, tls_key, tls_client_ca as above; [[terminals]] tls_subject = "CN={tid}"'
        " binds the TID to this client certificate",
    ]


def command_certs(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not 1 <= args.days <= MAX_DAYS:
        raise ConfigError(f"--days: must be 1..{MAX_DAYS}, got {args.days}")
    if not args.tid or len(args.tid) > 64:
        raise ConfigError(f"--tid: the client certificate's common name, 1..64 characters, got {args.tid!r}")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory")
    existing = [name for name in FILES if (directory / name).exists()]
    if existing and not args.force:
        raise ConfigError(f"{directory}: {', '.join(existing)} exist; --force replaces them")
    files = make_certificates(directory, args.tid, args.days)
    try:
        private_dir(directory)
        for name, data in files.items():
            write_private(directory / name, data)
    except OSError as error:
        raise ConfigError(f"{directory}: cannot write the certificates: {error.strerror or error}") from None
    print(f"wrote {', '.join(FILES)} to {directory} (valid {args.days} days; test use only: keys unencrypted)")
    for line in usage_lines(directory, args.tid):
        print(line)
    return EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser(
        "certs", help="make test certificates: a CA, a server (localhost, 127.0.0.1) and a client certificate",
        epilog="Files are 0600 (the directory 0700 when made) and print the serve and terminal flags that use them."
               " Exit codes: 0 written; 2 bad arguments, files that exist (without --force) or a directory that"
               " cannot be written (one line on stderr).",
    )  # fmt: skip
    certs.add_argument("dir", metavar="DIR", help="where to write ca.pem, ca.key, server.pem/.key, client.pem/.key")
    tid_help = f'the client certificate\'s subject CN, as tls_subject = "CN=TID" (default {DEMO_TID})'
    certs.add_argument("--tid", default=DEMO_TID, help=tid_help)
    certs.add_argument("--days", type=int, default=DEFAULT_DAYS, metavar="N",
                       help=f"validity in days, 1..{MAX_DAYS} (default {DEFAULT_DAYS})")  # fmt: skip
    certs.add_argument("--force", action="store_true", help="replace files a previous run wrote (default: refuse)")
    certs.set_defaults(handler=command_certs)
