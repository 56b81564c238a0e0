"""The exit status of every ``iso-host`` command, defined once.

A command ends with one of three: it did what was asked and the answer is yes; it did, and the answer is no;
or it could not do its job at all.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
# The command ran and its result is negative: a declined request, a replay that differed or got no reply, fuzz
# findings, ledger violations, a failed script step, events that did not come in time, a refused control command.
EXIT_NEGATIVE: Final = 1
# Usage or connection error: a bad flag, config or file; a host or broker that cannot be reached, or was lost.
EXIT_ERROR: Final = 2
