"""``serve --workers N``: N protocol worker processes in front of one core process.

The core (the ``serve`` process) owns everything a decision reads or changes: the ledger, the ``Host`` with its
sessions, test-card balances, scenarios and their counters, RRNs, the replay guard and the per-terminal locks, the
MQTT relay and live control. Workers own the sockets: accept (one listening socket the core made and handed down),
TLS, framing, limits and timeouts, and the log line of each answer. A worker hands each whole frame to the core over
a Unix socket (``ipc``) and writes back what the core answered. Whatever worker a terminal reaches, the same core
decides, so a void on one worker sees the sale made on another by construction.
"""
