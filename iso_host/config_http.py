"""``[http]``: the web console's address, whether it may change the host, and its token (issue 16); the same address
from ``--http HOST:PORT`` or the environment's ``ISO_HOST_HTTP``."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from typing import Any, Final

from iso_host.config_checks import Problems
from iso_host.errors import ConfigError

HTTP_KEYS: Final = frozenset({"listen", "enabled", "control", "token"})
ENVIRONMENT_KEY: Final = "ISO_HOST_HTTP"  # HOST:PORT, or "off"; the flags win over it, it wins over the file
MIN_TOKEN_CHARS: Final = 16


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Where the console listens, whether it may change anything, and the bearer token for that."""

    host: str = "127.0.0.1"
    port: int = 8080
    enabled: bool = True
    control: bool = False  # read-only unless true
    token: str | None = field(default=None, repr=False)  # with control on beyond loopback; else one is made at start

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_listen(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a host and a port.

    Raises:
        ConfigError: naming ``what`` and the value.
    """
    host, separator, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
        raise ConfigError(f"{what}: must be HOST:PORT (port 0..65535; 0 picks a free one), got {text!r}")
    return host, int(port)


def http_settings(problems: Problems, table: dict[str, Any]) -> HttpConfig:
    """``[http]``, each bad key one line."""
    settings = HttpConfig()
    if "listen" in table:
        try:
            host, port = parse_listen(str(table["listen"]), "http.listen")
        except ConfigError as error:
            problems.add("http.listen", str(error).removeprefix("http.listen: "))
        else:
            settings = replace(settings, host=host, port=port)
    for name in ("enabled", "control"):
        if name in table:
            if isinstance(table[name], bool):
                settings = replace(settings, **{name: table[name]})
            else:
                problems.add(f"http.{name}", f"must be true or false, got {table[name]!r}")
    if "token" in table:
        token = table["token"]
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
            problems.add("http.token", f"must be at least {MIN_TOKEN_CHARS} printable characters without spaces")
        else:
            settings = replace(settings, token=token)
    return settings


def http_overrides(settings: HttpConfig, listen: str | None, off: bool) -> HttpConfig:
    """``--http HOST:PORT`` / ``--no-http``, else ``ISO_HOST_HTTP``, on top of the file's ``[http]``.

    Raises:
        ConfigError: a bad address (one line naming the flag or the variable).
    """
    if off:
        return replace(settings, enabled=False)
    source, text = ("--http", listen) if listen is not None else (ENVIRONMENT_KEY, os.environ.get(ENVIRONMENT_KEY))
    if text is None:
        return settings
    if text == "off" and source == ENVIRONMENT_KEY:
        return replace(settings, enabled=False)
    host, port = parse_listen(text, source)
    return replace(settings, host=host, port=port, enabled=True)
