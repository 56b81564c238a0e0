"""The terminals' keys checked against the MAC algorithm each will use, once the dialect is known, before the port is
bound: a key the algorithm does not take would otherwise fail every MAC'd request of that terminal at run time.

Which key MACs a terminal's requests (``core/admission.py``): for a DUKPT terminal the key derived from its BDK
(16 bytes) under its own ``mac`` or X9.19; otherwise the TAK of its last sign-on (as long as the dialect family's
key blocks make it) or its static ``tak``, under its own ``mac`` or the dialect's. A dialect without a MAC algorithm
MACs nothing, and there is nothing to check. Each problem is one line naming the terminal, the key and the algorithm,
never the key's value.
"""

from __future__ import annotations

from collections.abc import Iterable

from iso_host.config import TerminalConfig
from iso_host.config_checks import Problems
from iso_host.security import MAC_KEY_LENGTHS
from iso_host.security.dukpt import BDK_BYTES
from iso_host.styles import family_of
from iso_host.vocab import DEFAULT_MAC_ALGORITHM
from iso_host.wire import Dialect

DUKPT_MAC_KEY_BYTES = BDK_BYTES  # the request and response MAC keys are variants of the 16-byte transaction key


def _lengths(lengths: Iterable[int]) -> str:
    *head, last = (str(length) for length in sorted(lengths))
    return f"{', '.join(head)} or {last}" if head else last


def mac_key_problems(problems: Problems, terminals: Iterable[TerminalConfig], dialect: Dialect) -> None:
    """Add one line to ``problems`` for each key that the MAC algorithm its terminal will use does not take."""
    dialect_algorithm = dialect.security.mac_algorithm
    if dialect_algorithm is None:
        return
    signon_tak_bytes = family_of(dialect).signon_tak_bytes
    for index, terminal in enumerate(terminals):
        key = f"terminals[{index}]"
        if terminal.bdk is not None:
            algorithm = terminal.mac or DEFAULT_MAC_ALGORITHM
            whose = f"{key}.mac" if terminal.mac else "the default for DUKPT"
            taken = MAC_KEY_LENGTHS[algorithm]
            if DUKPT_MAC_KEY_BYTES not in taken:
                problems.add(f"{key}.bdk", f"terminal {terminal.tid}'s DUKPT MAC keys are {DUKPT_MAC_KEY_BYTES} bytes;"
                             f" MAC algorithm {algorithm} ({whose}) takes {_lengths(taken)} bytes")  # fmt: skip
            continue
        algorithm = terminal.mac or dialect_algorithm
        whose = f"{key}.mac" if terminal.mac else f"dialect {dialect.name}'s"
        taken = MAC_KEY_LENGTHS[algorithm]
        if terminal.tak is not None and len(terminal.tak) // 2 not in taken:
            problems.add(f"{key}.tak", f"terminal {terminal.tid}'s TAK is {len(terminal.tak) // 2} bytes;"
                         f" MAC algorithm {algorithm} ({whose}) takes {_lengths(taken)} bytes")  # fmt: skip
        wrong = [length for length in signon_tak_bytes if length not in taken]
        if terminal.tmk is not None and wrong:
            problems.add(f"{key}.tmk", f"terminal {terminal.tid} signs on to a TAK of {_lengths(wrong)} bytes (the key"
                         f" block of dialect {dialect.name}); MAC algorithm {algorithm} ({whose}) takes"
                         f" {_lengths(taken)} bytes")  # fmt: skip
