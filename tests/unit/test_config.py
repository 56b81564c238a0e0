"""Configuration: the TOML file, its defaults, every bad key reported in one pass, and command-line overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from iso_host.config import (
    DEMO_MID,
    DEMO_TID,
    Config,
    TerminalConfig,
    load_config,
    parse_config,
    with_overrides,
)
from iso_host.errors import ConfigError
from iso_host.limits import Limits

SOURCE = "iso-host.toml"
TMK = "00112233445566778899aabbccddeeff"

SAMPLE = f"""
[server]
host = "0.0.0.0"
port = 5000
dialect = "cup"

[ledger]
url = "sqlite:///var/lib/iso-host/ledger.db"

[[terminals]]
tid = "TERM0002"
mid = "MERCHANT0000002"
tmk = "{TMK}"

[[terminals]]
tid = "TERM0003"
mid = "MERCHANT0000002"
"""

NOT_HEX_TMK = "SECRET-KEY-0123456789ABCDEF-ZZ"

# (document, the key the error names, words of the problem)
BAD_DOCUMENTS = [
    pytest.param({"server": {"port": 8583}, "database": {}}, "database", "unknown section", id="unknown-section"),
    pytest.param({"server": {"hots": "0.0.0.0"}}, "server.hots", "unknown key (expected one of",
                 id="unknown-key-in-server"),
    pytest.param({"server": 8583}, "server", "must be a table", id="server-not-a-table"),
    pytest.param({"server": {"host": ""}}, "server.host", "must be a non-empty string", id="host-empty"),
    pytest.param({"server": {"port": "x"}}, "server.port", "must be 0..65535, got 'x'", id="port-string"),
    pytest.param({"server": {"port": 70000}}, "server.port", "must be 0..65535, got 70000", id="port-70000"),
    pytest.param({"server": {"port": -1}}, "server.port", "must be 0..65535, got -1", id="port-negative"),
    pytest.param({"server": {"port": True}}, "server.port", "must be 0..65535, got True", id="port-boolean"),
    pytest.param({"ledger": {"url": 5}}, "ledger.url", "must be a non-empty string, got 5", id="ledger-url-integer"),
    pytest.param({"log": {"format": "xml"}}, "log.format", "must be one of auto, json, console", id="log-format"),
    pytest.param({"log": {"level": "trace"}}, "log.level", "must be one of debug, info, warning, error",
                 id="log-level"),
    pytest.param({"log": {"sample_approvals": 0}}, "log.sample_approvals", "must be a whole number >= 1",
                 id="sample-approvals-zero"),
    pytest.param({"log": {"sample_approvals": True}}, "log.sample_approvals", "must be a whole number >= 1",
                 id="sample-approvals-boolean"),
    pytest.param({"server": {"loop": "trio"}}, "server.loop", "must be one of auto, uvloop, asyncio", id="loop"),
    pytest.param({"limits": {"frame_timeout_s": "30s"}}, "limits.frame_timeout_s", "must be seconds > 0, got '30s'",
                 id="frame-timeout-with-unit"),
    pytest.param({"limits": {"frame_timeout_s": 0}}, "limits.frame_timeout_s", "must be seconds > 0, got 0",
                 id="frame-timeout-zero"),
    pytest.param({"limits": {"max_frame_bytes": 8192.5}}, "limits.max_frame_bytes", "must be a whole number > 0",
                 id="max-frame-bytes-float"),
    pytest.param({"limits": {"max_frame_bytes": 70000}}, "limits.max_frame_bytes", "must be at most 65535",
                 id="max-frame-bytes-over-binary2"),
    pytest.param({"limits": {"max_frames": 1}}, "limits.max_frames", "unknown key", id="limits-unknown-key"),
    pytest.param({"terminals": []}, "terminals", "must be a non-empty array of tables", id="terminals-empty"),
    pytest.param({"terminals": ["TERM0001"]}, "terminals[0]", "must be a table", id="terminal-not-a-table"),
    pytest.param({"terminals": [{"tid": "TERM001", "mid": DEMO_MID}]}, "terminals[0].tid",
                 "must be 8 characters (field 41), got 'TERM001'", id="tid-7-chars"),
    pytest.param({"terminals": [{"tid": DEMO_TID, "mid": "MERCHANT000001"}]}, "terminals[0].mid",
                 "must be 15 characters (field 42), got 'MERCHANT000001'", id="mid-14-chars"),
    pytest.param({"terminals": [{"tid": DEMO_TID, "mid": DEMO_MID, "tmk": NOT_HEX_TMK}]}, "terminals[0].tmk",
                 "must be 16, 32 or 48 hex digits", id="tmk-not-hex"),
    pytest.param({"terminals": [{"tid": DEMO_TID, "mid": DEMO_MID, "tmk": TMK[:20]}]}, "terminals[0].tmk",
                 "must be 16, 32 or 48 hex digits", id="tmk-20-digits"),
    pytest.param({"terminals": [{"tid": DEMO_TID, "mid": DEMO_MID, "pin": "1234"}]}, "terminals[0].pin",
                 "unknown key (expected one of", id="terminal-unknown-key"),
    pytest.param({"terminals": [{"tid": DEMO_TID, "mid": DEMO_MID}, {"tid": DEMO_TID, "mid": "MERCHANT0000002"}]},
                 "terminals", "tid 'TERM0001' is configured twice", id="duplicate-tid"),
    pytest.param({"terminals": [{"tid": DEMO_TID, "mid": DEMO_MID, "merchant_name": " "}]},
                 "terminals[0].merchant_name", "must be a non-empty string", id="merchant-name-blank"),
]  # fmt: skip


def _config_error(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(document, SOURCE)
    return str(info.value)


class TestParseConfig:
    """parse_config builds a Config from a parsed document, or names every bad key."""

    def test_sample(self) -> None:
        """The sample file sets the server, the ledger and the terminals."""
        config = parse_config(tomllib.loads(SAMPLE), SOURCE)
        assert (config.host, config.port, config.dialect) == ("0.0.0.0", 5000, "cup")
        assert config.ledger_url == "sqlite:///var/lib/iso-host/ledger.db"
        assert config.terminals == (
            TerminalConfig("TERM0002", "MERCHANT0000002", TMK.upper()),
            TerminalConfig("TERM0003", "MERCHANT0000002", None),
        )
        assert config.source == SOURCE
        assert config.limits == Limits()

    def test_empty_document_gives_defaults(self) -> None:
        """Nothing configured means the defaults and the demo terminal."""
        config = parse_config({}, SOURCE)
        assert config == Config(source=SOURCE)
        assert [(t.tid, t.mid) for t in config.terminals] == [(DEMO_TID, DEMO_MID)]
        assert (config.host, config.port, config.dialect) == ("127.0.0.1", 8583, "iso87binary")

    def test_terminals_replace_the_demo_terminal(self) -> None:
        """Configuring terminals removes the demo one."""
        config = parse_config({"terminals": [{"tid": "TERM0009", "mid": "MERCHANT0000009"}]}, SOURCE)
        assert [t.tid for t in config.terminals] == ["TERM0009"]

    def test_a_terminals_merchant_name(self) -> None:
        """What a parameter download serves the terminal instead of the parameter file's merchant name."""
        terminal = {"tid": "TERM0009", "mid": "MERCHANT0000009", "merchant_name": "上海测试商户"}
        assert parse_config({"terminals": [terminal]}, SOURCE).terminals[0].merchant_name == "上海测试商户"

    def test_limits(self) -> None:
        """Limits are read with their units; whole seconds become floats, and false turns the idle timeout off."""
        document = {"limits": {"frame_timeout_s": 30, "idle_timeout_s": False, "max_frame_bytes": 4096}}
        limits = parse_config(document, SOURCE).limits
        assert limits == Limits(frame_timeout_s=30.0, idle_timeout_s=None, max_frame_bytes=4096)
        assert isinstance(limits.frame_timeout_s, float)

    def test_log_settings(self) -> None:
        """Log format and level are taken from the [log] section."""
        config = parse_config({"log": {"format": "json", "level": "debug"}}, SOURCE)
        assert (config.log_format, config.log_level) == ("json", "debug")
        assert config.log_sample_approvals == 100  # the default: log.DEFAULT_SAMPLE_APPROVALS
        assert parse_config({"log": {"sample_approvals": 1}}, SOURCE).log_sample_approvals == 1

    def test_loop(self) -> None:
        """[server] loop: asyncio's unless set."""
        assert parse_config({}, SOURCE).loop == "asyncio"
        assert parse_config({"server": {"loop": "auto"}}, SOURCE).loop == "auto"

    @pytest.mark.parametrize(("document", "key", "problem"), BAD_DOCUMENTS)
    def test_bad_document_names_the_key(self, document: dict[str, Any], key: str, problem: str) -> None:
        """One bad key gives one line naming the file, the key and what was expected."""
        message = _config_error(document)
        assert message.startswith(f"{SOURCE}: {key}: ")
        assert problem in message
        assert "\n" not in message

    @pytest.mark.parametrize("tmk", [NOT_HEX_TMK, TMK[:20], TMK + "0"], ids=["not-hex", "20-digits", "33-digits"])
    def test_bad_tmk_is_not_echoed(self, tmk: str) -> None:
        """A key that is refused never appears in the error, not even in part."""
        message = _config_error({"terminals": [{"tid": DEMO_TID, "mid": DEMO_MID, "tmk": tmk}]})
        assert tmk not in message
        assert tmk[:16] not in message

    def test_every_bad_key_in_one_pass(self) -> None:
        """All problems are reported together, one line each, so one edit fixes the file."""
        document = {
            "bogus": {},
            "server": {"port": "x", "host": ""},
            "limits": {"frame_timeout_s": "30s"},
            "terminals": [{"tid": "TERM001", "mid": "MERCHANT000001"}],
        }
        lines = _config_error(document).splitlines()
        assert [line.split(": ")[1] for line in lines] == [
            "bogus",
            "limits.frame_timeout_s",
            "server.host",
            "server.port",
            "terminals[0].tid",
            "terminals[0].mid",
        ]
        assert all(line.startswith(f"{SOURCE}: ") for line in lines)


class TestLoadConfig:
    """load_config reads a file, or returns the defaults."""

    def test_no_path_gives_defaults(self) -> None:
        """Without a file the defaults apply."""
        assert load_config(None) == Config()

    def test_reads_a_file(self, tmp_path: Path) -> None:
        """A file is parsed and becomes the source named in errors."""
        path = tmp_path / "iso-host.toml"
        path.write_text(SAMPLE, encoding="utf-8")
        config = load_config(str(path))
        assert config == parse_config(tomllib.loads(SAMPLE), str(path))
        assert config.source == str(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A path that does not exist is a ConfigError naming it."""
        path = tmp_path / "absent.toml"
        with pytest.raises(ConfigError, match=r"absent\.toml: cannot read config file: No such file or directory"):
            load_config(str(path))

    def test_not_toml(self, tmp_path: Path) -> None:
        """A file that is not TOML is a ConfigError naming it."""
        path = tmp_path / "iso-host.toml"
        path.write_text("[server\nport = 1\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"iso-host\.toml: not valid TOML"):
            load_config(str(path))

    def test_bad_key_names_the_file(self, tmp_path: Path) -> None:
        """Errors in a file name that file."""
        path = tmp_path / "iso-host.toml"
        path.write_text('[server]\nport = "x"\n', encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(str(path))
        assert str(info.value) == f"{path}: server.port: must be 0..65535, got 'x'"

    def test_binary_file(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 text is a ConfigError naming it, not a UnicodeDecodeError."""
        path = tmp_path / "iso-host.toml"
        path.write_bytes(b"\xff\xfe[\x00s\x00")
        with pytest.raises(ConfigError, match=r"iso-host\.toml: "):
            load_config(str(path))


class TestWithOverrides:
    """with_overrides applies command-line flags on top of the file."""

    def test_none_means_not_given(self) -> None:
        """Flags left at None keep the file's values."""
        config = parse_config(tomllib.loads(SAMPLE), SOURCE)
        assert with_overrides(config, host=None, port=None, dialect=None) == config

    def test_given_flags_win(self) -> None:
        """A given flag replaces the file's value and leaves the rest alone."""
        config = parse_config(tomllib.loads(SAMPLE), SOURCE)
        overridden = with_overrides(config, port=0, dialect="iso87ascii", host=None)
        assert (overridden.host, overridden.port, overridden.dialect) == ("0.0.0.0", 0, "iso87ascii")
        assert overridden.terminals == config.terminals
        assert config.port == 5000

    @pytest.mark.parametrize("port", [-1, 65_536], ids=["negative", "too-big"])
    def test_bad_port(self, port: int) -> None:
        """An out-of-range --port is a ConfigError naming the flag."""
        with pytest.raises(ConfigError, match=f"--port: must be 0..65535, got {port}"):
            with_overrides(Config(), port=port)


class TestEventsAndControl:
    def test_events_are_off_by_default(self) -> None:
        config = parse_config({}, SOURCE)
        assert config.events is None
        assert config.control_enabled is False

    def test_events_and_control(self) -> None:
        document = tomllib.loads(
            '[events]\nmqtt_url = "mqtts://broker.lab:8883"\nusername = "host"\npassword = "secret"\n'
            'client_id = "lab-1"\ntopic_prefix = "lab/iso"\nca_file = "ca.pem"\nkeep_sent_s = 60\n'
            "[control]\nenabled = true\n"
        )
        config = parse_config(document, SOURCE)
        assert config.events is not None
        assert (config.events.url, config.events.username, config.events.client_id) == (
            "mqtts://broker.lab:8883", "host", "lab-1",
        )  # fmt: skip
        assert (config.events.topic_prefix, config.events.ca_file) == ("lab/iso", "ca.pem")
        assert config.events_keep_sent_s == 60.0
        assert config.control_enabled is True
        assert "secret" not in repr(config), "the broker password never reaches a log line through repr"

    @pytest.mark.parametrize(
        ("document", "key", "problem"),
        [
            pytest.param({"events": {"mqtt_url": "http://x"}}, "events.mqtt_url", "expected mqtt://", id="scheme"),
            pytest.param({"events": {"mqtt_url": "mqtt://:1883"}}, "events.mqtt_url", "no host", id="no-host"),
            pytest.param({"events": {"mqtt_url": "mqtt://h:99999"}}, "events.mqtt_url", "bad port", id="port"),
            pytest.param({"events": {"mqtt_url": "mqtt://h", "topic_prefix": "a/+/b"}}, "events.topic_prefix",
                         "without +, #", id="wildcard-prefix"),
            pytest.param({"events": {"mqtt_url": "mqtt://h", "topic_prefix": "a//b"}}, "events.topic_prefix",
                         "empty levels", id="empty-level"),
            pytest.param({"events": {"mqtt_url": "mqtt://h", "password": "p"}}, "events.password",
                         "needs events.username", id="password-alone"),
            pytest.param({"events": {"mqtt_url": "mqtt://h", "keep_sent_s": 0}}, "events.keep_sent_s",
                         "seconds > 0", id="keep-zero"),
            pytest.param({"events": {"username": "u"}}, "events.username", "without events.mqtt_url", id="no-url"),
            pytest.param({"control": {"enabled": True}}, "control.enabled", "needs events.mqtt_url",
                         id="control-without-broker"),
            pytest.param({"control": {"enabled": "yes"}}, "control.enabled", "true or false", id="control-type"),
            pytest.param({"events": {"url": "mqtt://h"}}, "events.url", "unknown key", id="unknown-key"),
        ],
    )
    def test_bad_settings_name_the_key(self, document: dict[str, Any], key: str, problem: str) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_config(document, SOURCE)
        (line,) = [line for line in str(raised.value).splitlines() if f": {key}:" in line]
        assert problem in line
        assert line.startswith(f"{SOURCE}: {key}: ")
