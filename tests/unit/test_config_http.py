"""``[http]``, ``--http`` / ``--no-http`` and ``ISO_HOST_HTTP``: which wins, and one line for each bad value."""

from __future__ import annotations

import pytest

from iso_host.config import parse_config
from iso_host.config_http import ENVIRONMENT_KEY, HttpConfig, http_overrides, parse_listen
from iso_host.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9000", ("::1", 9000)),
     ("localhost:80", ("localhost", 80))],
)  # fmt: skip
def test_listen_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_listen(text, "--http") == address


@pytest.mark.parametrize("text", ["8080", "host:", ":8080", "host:port", "host:65536", "host:-1"])
def test_bad_listen_addresses_name_where_they_came_from(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--http: must be HOST:PORT"):
        parse_listen(text, "--http")


@pytest.mark.parametrize(
    ("flag", "off", "environment", "expected"),
    [
        pytest.param(None, False, None, HttpConfig(), id="defaults"),
        pytest.param(None, False, "127.0.0.1:0", HttpConfig(port=0), id="variable"),
        pytest.param(None, False, "off", HttpConfig(enabled=False), id="variable-off"),
        pytest.param("127.0.0.1:9", False, "off", HttpConfig(port=9), id="flag-wins"),
        pytest.param(None, True, "127.0.0.1:0", HttpConfig(enabled=False), id="no-http-wins"),
    ],
)  # fmt: skip
def test_which_wins(monkeypatch: pytest.MonkeyPatch, flag: str | None, off: bool, environment: str | None,
                    expected: HttpConfig) -> None:  # fmt: skip
    if environment is None:
        monkeypatch.delenv(ENVIRONMENT_KEY, raising=False)
    else:
        monkeypatch.setenv(ENVIRONMENT_KEY, environment)
    assert http_overrides(HttpConfig(), flag, off) == expected


@pytest.mark.parametrize(
    ("table", "line"),
    [
        ({"listen": "nowhere"}, "http.listen: must be HOST:PORT"),
        ({"control": "yes"}, "http.control: must be true or false"),
        ({"enabled": 1}, "http.enabled: must be true or false"),
        ({"token": "short"}, "http.token: must be at least 16"),
        ({"port": 80}, "http.port: unknown key"),
    ],
)  # fmt: skip
def test_bad_http_tables_are_one_line_each(table: dict[str, object], line: str) -> None:
    with pytest.raises(ConfigError, match=line):
        parse_config({"http": table}, "host.toml")


def test_a_good_table() -> None:
    config = parse_config({"http": {"listen": "0.0.0.0:8081", "control": True, "token": "t" * 20}}, "host.toml")
    assert config.http == HttpConfig(host="0.0.0.0", port=8081, control=True, token="t" * 20)
    assert not config.http.loopback
