"""Terminal parameters a host serves in one field (CUP: F62 of the 0810 answering 0800 60.3 = 360 or 364): a
sequence of entries, each a 2-digit tag then a value of the length fixed for that tag, in ASCII (text in GBK, as
CUP terminals print merchant names). Loading, encoding and decoding; the ``parameters`` flow serves them.

File format: ``[[parameters]]`` tables in serving order, each with ``tag`` ("11".."99"), ``name`` (what it means),
``type`` ("n": digits, exactly ``length`` of them; "ans": text, padded with spaces to ``length`` bytes) and
``value``. The tags and lengths are the layout: a terminal reads the field by them, so a file must give every tag the
length its terminals expect. ``merchant_name_tag`` names the entry a terminal's own ``merchant_name`` replaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from iso_host.errors import ConfigError

TEXT_ENCODING: Final = "gbk"  # CUP terminals print in GB 2312 / GBK
TYPES: Final = ("n", "ans")
_TAG: Final = re.compile(r"\d{2}")
PARAMETER_KEYS: Final = frozenset({"tag", "name", "type", "length", "value"})


class ParameterError(ValueError):
    """A value that does not fit its parameter, or a field that does not read as the layout says."""


@dataclass(frozen=True, slots=True)
class Parameter:
    """One entry: its tag, what it means, its type and fixed length (bytes on the wire), and its value."""

    tag: str
    name: str
    type: str
    length: int
    value: str

    def encoded(self, value: str | None = None) -> bytes:
        """The tag and the value (this one's, or ``value`` in its place) at the parameter's fixed length.

        Raises:
            ParameterError: digits of another length for an "n" parameter, text longer than the length or not
                encodable for an "ans" one.
        """
        text = self.value if value is None else value
        if self.type == "n":
            if not (text.isascii() and text.isdigit() and len(text) == self.length):
                raise ParameterError(f"must be exactly {self.length} digits, got {text!r}")
            return self.tag.encode("ascii") + text.encode("ascii")
        try:
            raw = text.encode(TEXT_ENCODING)
        except UnicodeEncodeError:
            raise ParameterError(f"cannot be written in {TEXT_ENCODING.upper()}: {text!r}") from None
        if len(raw) > self.length:
            raise ParameterError(f"is {len(raw)} bytes in {TEXT_ENCODING.upper()}, at most {self.length}")
        return self.tag.encode("ascii") + raw.ljust(self.length, b" ")


@dataclass(frozen=True, slots=True)
class ParameterSet:
    """The parameters one kind serves, in serving order."""

    name: str
    parameters: tuple[Parameter, ...]
    merchant_name_tag: str | None = None  # the entry a terminal's configured merchant name replaces

    def encode(self, merchant_name: str | None = None) -> bytes:
        """The whole field; ``merchant_name`` (a terminal's own) in place of the merchant name entry's value, cut
        to the entry's length (whole characters) and with what GBK cannot write as ``?``."""
        return b"".join(
            parameter.encoded(_fitted(merchant_name, parameter.length) if merchant_name is not None
                              and parameter.tag == self.merchant_name_tag else None)
            for parameter in self.parameters
        )  # fmt: skip

    def decode(self, data: bytes) -> list[tuple[Parameter, str]]:
        """Read a field laid out by these parameters' tags and lengths (a terminal's side): each entry with its
        value, trailing spaces of text dropped.

        Raises:
            ParameterError: a tag this set does not know (its length, hence the rest, cannot be read), or a field
                that ends inside a value.
        """
        by_tag = {parameter.tag: parameter for parameter in self.parameters}
        found: list[tuple[Parameter, str]] = []
        offset = 0
        while offset < len(data):
            tag = data[offset : offset + 2].decode("ascii", errors="replace")
            parameter = by_tag.get(tag)
            if parameter is None:
                raise ParameterError(f"unknown parameter tag {tag!r} at byte {offset}")
            value = data[offset + 2 : offset + 2 + parameter.length]
            if len(value) < parameter.length:
                raise ParameterError(f"parameter {tag} is cut short at byte {len(data)}")
            found.append((parameter, value.decode(TEXT_ENCODING, errors="replace").rstrip(" ")))
            offset += 2 + parameter.length
        return found

    def size(self) -> int:
        """The field's length in bytes (fixed: every value has its parameter's length)."""
        return sum(2 + parameter.length for parameter in self.parameters)


def _fitted(text: str, length: int) -> str:
    """``text`` as GBK writes it (``?`` for what it cannot), cut to at most ``length`` bytes on a character."""
    text = text.encode(TEXT_ENCODING, errors="replace").decode(TEXT_ENCODING)
    while len(text.encode(TEXT_ENCODING)) > length:
        text = text[:-1]
    return text


def _parameter(path: Path, key: str, raw: Any) -> Parameter:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {key}: must be a table with tag, name, type, length and value")
    if unknown := sorted(set(raw) - PARAMETER_KEYS):
        raise ConfigError(f"{path}: {key}.{unknown[0]}: unknown key (known: {', '.join(sorted(PARAMETER_KEYS))})")
    tag, name, kind, length, value = (raw.get(k) for k in ("tag", "name", "type", "length", "value"))
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise ConfigError(f"{path}: {key}.tag: must be two digits, got {tag!r}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: {key}.name: must say what the parameter is")
    if kind not in TYPES:
        raise ConfigError(f"{path}: {key}.type: must be one of {', '.join(TYPES)}, got {kind!r}")
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 99:
        raise ConfigError(f"{path}: {key}.length: must be a whole number of bytes from 1 to 99, got {length!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {key}.value: must be a string, got {value!r}")
    parameter = Parameter(tag, name, kind, length, value)
    try:
        parameter.encoded()
    except ParameterError as error:
        raise ConfigError(f"{path}: {key}.value: {error}") from None
    return parameter


def _unique(path: Path, parameters: list[Parameter]) -> Iterator[Parameter]:
    seen: set[str] = set()
    for index, parameter in enumerate(parameters):
        if parameter.tag in seen:
            raise ConfigError(f"{path}: parameters[{index}].tag: tag {parameter.tag} is given twice")
        seen.add(parameter.tag)
        yield parameter


def parameter_set(name: str, path: Path, document: dict[str, Any], max_bytes: int) -> ParameterSet:
    """A parameter file's document as a set that fits in ``max_bytes`` (the field that carries it).

    Raises:
        ConfigError: naming the file and the key that is wrong.
    """
    raw = document.get("parameters")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: parameters: must be a non-empty array of tables")
    if unknown := sorted(set(document) - {"parameters", "merchant_name_tag"}):
        raise ConfigError(f"{path}: {unknown[0]}: unknown key (known: parameters, merchant_name_tag)")
    parameters = tuple(_unique(path, [_parameter(path, f"parameters[{i}]", entry) for i, entry in enumerate(raw)]))
    merchant_tag = document.get("merchant_name_tag")
    if merchant_tag is not None and not any(p.tag == merchant_tag and p.type == "ans" for p in parameters):
        raise ConfigError(f"{path}: merchant_name_tag: must name a text (ans) parameter of this file, got "
                          f"{merchant_tag!r}")  # fmt: skip
    served = ParameterSet(name, parameters, merchant_tag)
    if served.size() > max_bytes:
        raise ConfigError(f"{path}: parameters: {served.size()} bytes, more than the {max_bytes} the field holds")
    return served
