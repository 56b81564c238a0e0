"""What live control may change in a running host, and how a host hands it over: ``host_controls``, the one place
the MQTT listener and the web console get theirs from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iso_host.cards import pan_hash
from iso_host.clock import HostClock
from iso_host.core.scenarios import ScenarioBook
from iso_host.core.terminals import TerminalState
from iso_host.core.test_cards import CardBook
from iso_host.wire import Dialect

if TYPE_CHECKING:
    from iso_host.core.pipeline import Host


@dataclass(slots=True)
class Controls:
    """What live control may change in a running host (the host's own objects, shared, not copies)."""

    scenarios: ScenarioBook
    terminals: dict[str, TerminalState]
    clock: HostClock
    pan_hash: Callable[[str], str]  # keyed hash for a scenario's ``pan``
    reload_cards: Callable[[], int] | None  # re-reads [[cards]] (raises ConfigError); None: started without --config
    dialect: Dialect | None = None  # the host's: a scenario's issuer scripts must fit its field 55 (None: unchecked)
    cards: CardBook | None = None  # the host's test cards, for list-cards (None: not given to live control)


def host_controls(host: Host, reload_cards: Callable[[], int] | None) -> Controls:
    """The host's own scenarios, terminals, clock and test cards (shared, not copied), its PAN hash for a scenario's
    ``pan``, and ``reload_cards`` for reload-cards (None: started without a config file)."""
    assert isinstance(host.clock, HostClock), "live control moves the host's clock"
    return Controls(
        scenarios=host.scenarios, terminals=host.terminals, clock=host.clock,
        pan_hash=lambda pan: pan_hash(pan, host.store.pan_hash_key), reload_cards=reload_cards, dialect=host.dialect,
        cards=host.cards,
    )  # fmt: skip
