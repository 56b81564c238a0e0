"""A terminal's requests beyond payments: any request its dialect has a template for, the IC public key
and IC parameter downloads an EMV terminal runs after sign-on (CUP.md: status 372/382, one download 370/380
per record, end 371/381), checking every key it is given as a real terminal does before it stores it, and the
parameter download (0800 60.3 = 360), read by the tags and lengths of the dialect's parameter file."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from iso_host.clock import local_now
from iso_host.security import SecurityError, TlvItem, build_tlv, parse_tlv, tag_values
from iso_host.styles import family_of
from iso_host.terminal.client import ClientError, MacKeys, TerminalClient
from iso_host.wire import Message
from iso_host.wire.parameters import Parameter, ParameterError, ParameterSet

Send = Callable[[Message, MacKeys | None], Awaitable[Message]]
WHOLE: Final = b"1"
# (what, status template, download template, end template, the tag that starts a record in a status list)
DOWNLOADS: Final = (
    ("IC public keys", "ic_key_status", "ic_key_download", "ic_key_end"),
    ("IC parameters", "ic_param_status", "ic_param_download", "ic_param_end"),
)
RECORD_START: Final = "9F06"  # RID or AID: every record's identity starts with it
PARAMETER_TEMPLATE: Final = "parameter_download"


@dataclass(frozen=True, slots=True)
class Downloaded:
    """What one download fetched: its name and the identity of every record (hex), keys checked."""

    what: str
    records: tuple[str, ...]


def require_template(client: TerminalClient, name: str) -> None:
    if name not in client.dialect.templates:
        known = ", ".join(sorted(client.dialect.templates))
        raise ClientError(f"dialect {client.dialect.name} has no template {name!r} (it has: {known})")


def mac_for(client: TerminalClient, message: Message, mac: MacKeys | None) -> MacKeys | None:
    """The keys to MAC ``message`` with, when its kind is one the dialect MACs."""
    rule = client.dialect.classify(message)
    return mac if rule is not None and rule.kind in client.dialect.security.mac_kinds else None


async def send_template(send: Send, client: TerminalClient, name: str, values: dict[str, Any],
                        mac: MacKeys | None) -> Message:  # fmt: skip
    """Build the dialect's template ``name`` and send it, MAC'd where the dialect MACs its kind."""
    require_template(client, name)
    message = client.build(name, local_now(), **values)
    return await send(message, mac_for(client, message, mac))


def _data(response: Message, field_id: str, what: str) -> bytes:
    if response.fields.get("39") != "00" or field_id not in response.fields:
        raise ClientError(f"{what}: the host answered {response.fields.get('39')} without field {field_id}")
    return bytes.fromhex(response.fields[field_id])


def _identities(listed: bytes) -> list[list[TlvItem]]:
    """A status list: the identity data objects of each record, one after another."""
    records: list[list[TlvItem]] = []
    for item in parse_tlv(listed):
        if item.tag == RECORD_START or not records:
            records.append([])
        records[-1].append(TlvItem(item.tag, item.value))
    return records


def _checked(record: dict[str, bytes], what: str) -> None:
    """A CA public key must hash to its checksum (RID, index, modulus, exponent), as a terminal checks."""
    if {"9F22", "DF02", "DF04", "DF03"} <= record.keys():
        # EMV Book 2 fixes SHA-1 for the CA key checksum; it checks integrity, it protects no secret.
        signed = record["9F06"] + record["9F22"] + record["DF02"] + record["DF04"]
        if hashlib.sha1(signed, usedforsecurity=False).digest() != record["DF03"]:
            raise ClientError(f"{what}: key {record['9F22'].hex().upper()} does not match its checksum")


async def ic_download(send: Send, client: TerminalClient) -> tuple[Message, list[Downloaded]]:
    """Fetch every IC public key and IC parameter set the host lists; the last response and what was fetched.

    Raises:
        ClientError: the host refused a step, listed nothing it could serve, or sent a key that does not check.
    """
    field_id = family_of(client.dialect).download_field
    fetched: list[Downloaded] = []
    response = Message("")
    for what, status, download, end in DOWNLOADS:
        for name in (status, download, end):
            require_template(client, name)
        listed = _data(await send(client.build(status, local_now()), None), field_id, what)
        if listed[:1] != WHOLE:
            raise ClientError(f"{what}: the status list is incomplete (flag {listed[:1]!r})")
        try:
            identities = _identities(listed[1:])
            names = []
            for identity in identities:
                asked = build_tlv(identity).hex().upper()
                data = _data(await send(client.build(download, local_now(), data=asked), None), field_id, what)
                if data[:1] != WHOLE:
                    raise ClientError(f"{what}: the host has no record {asked}")
                _checked(tag_values(parse_tlv(data[1:])), what)
                names.append("".join(item.value.hex().upper() for item in identity[:2]))
        except SecurityError as error:
            raise ClientError(f"{what}: {error}") from None
        response = await send(client.build(end, local_now()), None)
        fetched.append(Downloaded(what, tuple(names)))
    return response, fetched


async def parameter_download(send: Send, client: TerminalClient) -> tuple[Message, list[tuple[Parameter, str]]]:
    """Ask for the terminal parameters (the dialect's ``parameter_download`` template) and read the answer by the
    tags and lengths of the parameter file the host serves that kind from; the response and each parameter's value.

    Raises:
        ClientError: the dialect has no such template or parameter file, the host refused, or its answer does not
            read by the layout.
    """
    require_template(client, PARAMETER_TEMPLATE)
    message = client.build(PARAMETER_TEMPLATE, local_now())
    rule = client.dialect.classify(message)
    layout = client.dialect.downloads.get(rule.download or "") if rule is not None else None
    if not isinstance(layout, ParameterSet):
        raise ClientError(f"dialect {client.dialect.name}: its {PARAMETER_TEMPLATE} kind serves no parameter file")
    response = await send(message, None)
    try:
        return response, layout.decode(_data(response, family_of(client.dialect).download_field, "parameters"))
    except ParameterError as error:
        raise ClientError(f"parameters: {error}") from None
