"""Ledger schema migrations, oldest first. A migration is never edited once released; add a new one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class PerDatabase:
    """One statement that the two databases spell differently (triggers)."""

    sqlite: str
    postgresql: str


Statement = str | PerDatabase

_SETTLED_BATCH_OF_NEW_ROW: Final = (
    "EXISTS (SELECT 1 FROM batches b WHERE b.tid = NEW.tid AND b.mid = NEW.mid"
    " AND b.batch_number = NEW.batch_number AND b.status = 'settled')"
)
# A settled batch is immutable (DESIGN.md): no row joins it, and no row of it changes status, except that a
# later refund (a row of the open batch) keeps count on its sale (PARTIALLY_REFUNDED, REFUNDED).
_STATUS_CHANGE_OF_SUBSTANCE: Final = "NEW.status <> OLD.status AND NEW.status NOT IN ('PARTIALLY_REFUNDED', 'REFUNDED')"
BATCH_SETTLED_MESSAGE: Final = "batch_settled"  # how both databases name the refusal (SQLite: message, PG: constraint)

# Written so that SQLite and PostgreSQL both accept every statement, or spelled for each (PerDatabase).
MIGRATIONS: Final[tuple[tuple[Statement, ...], ...]] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE terminals ("
        " tid TEXT NOT NULL, mid TEXT NOT NULL, batch_number INTEGER NOT NULL, created_at TEXT NOT NULL,"
        " PRIMARY KEY (tid, mid))",
        "CREATE TABLE transactions ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL, tid TEXT NOT NULL, mid TEXT NOT NULL, batch_number INTEGER NOT NULL,"
        " stan TEXT NOT NULL, rrn TEXT NOT NULL UNIQUE, auth_code TEXT NOT NULL,"
        " amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0), currency TEXT NOT NULL,"
        " masked_pan TEXT, pan_hash TEXT, status TEXT NOT NULL, response_code TEXT NOT NULL,"
        " reason TEXT NOT NULL, mti TEXT NOT NULL, processing_code TEXT NOT NULL,"
        " original_rrn TEXT REFERENCES transactions (rrn),"
        " created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        "CREATE INDEX transactions_by_terminal ON transactions (tid, mid, batch_number, stan)",
    ),
    (  # 2: sign-on sessions; working keys are stored only wrapped under the terminal's TMK (hex)
        "ALTER TABLE terminals ADD COLUMN signed_on INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE terminals ADD COLUMN operator TEXT",
        "ALTER TABLE terminals ADD COLUMN tpk_under_tmk TEXT",
        "ALTER TABLE terminals ADD COLUMN tak_under_tmk TEXT",
        "ALTER TABLE terminals ADD COLUMN tdk_under_tmk TEXT",
        "ALTER TABLE terminals ADD COLUMN session_at TEXT",
    ),
    (  # 3: voids, reversals, refunds, duplicates, batches
        "ALTER TABLE transactions ADD COLUMN refunded_minor BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE transactions ADD COLUMN operator TEXT",
        # A repeated STAN in one batch is a duplicate. Reversals repeat their original's STAN, so they are
        # left out; at most one reversal takes effect per original.
        "CREATE UNIQUE INDEX transactions_one_per_stan ON transactions (tid, mid, batch_number, stan)"
        " WHERE kind <> 'reversal'",
        "CREATE UNIQUE INDEX transactions_one_reversal ON transactions (original_rrn)"
        " WHERE kind = 'reversal' AND status = 'APPROVED'",
        # Indexes cost every sale's insert, so each covers only the rows its query reads.
        "DROP INDEX transactions_by_terminal",  # transactions_one_per_stan covers (tid, mid, batch, stan)
        "CREATE INDEX transactions_by_original ON transactions (original_rrn) WHERE original_rrn IS NOT NULL",
        "CREATE INDEX transactions_voids_by_day ON transactions (tid, mid, created_at) WHERE kind = 'void'",
        "CREATE TABLE batches ("
        " tid TEXT NOT NULL, mid TEXT NOT NULL, batch_number INTEGER NOT NULL, status TEXT NOT NULL,"
        " opened_at TEXT NOT NULL, settled_at TEXT, PRIMARY KEY (tid, mid, batch_number))",
    ),
    (  # 4: settlement: the totals both sides reported, the uploaded batch, the differences found
        "ALTER TABLE batches ADD COLUMN result TEXT",  # balanced | out_of_balance
        "ALTER TABLE batches ADD COLUMN host_totals TEXT",  # JSON: the host's totals when the terminal settled
        "ALTER TABLE batches ADD COLUMN terminal_totals TEXT",  # JSON: what the terminal sent
        "CREATE TABLE batch_uploads ("
        " tid TEXT NOT NULL, mid TEXT NOT NULL, batch_number INTEGER NOT NULL, stan TEXT NOT NULL,"
        " amount_minor BIGINT NOT NULL, masked_pan TEXT, pan_hash TEXT, foreign_card INTEGER NOT NULL,"
        " uploaded_at TEXT NOT NULL, PRIMARY KEY (tid, mid, batch_number, stan))",
        "CREATE TABLE batch_differences ("
        " tid TEXT NOT NULL, mid TEXT NOT NULL, batch_number INTEGER NOT NULL, stan TEXT NOT NULL,"
        " difference TEXT NOT NULL, rrn TEXT, host_amount_minor BIGINT, terminal_amount_minor BIGINT,"
        " masked_pan TEXT, recorded_at TEXT NOT NULL, PRIMARY KEY (tid, mid, batch_number, stan))",
    ),
    (  # 5: the transactional outbox: events written with the ledger change they tell of, relayed to MQTT
        "CREATE TABLE outbox ("
        " id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, tid TEXT, kind TEXT NOT NULL, payload TEXT NOT NULL,"
        " created_at TEXT NOT NULL, sent_at TEXT)",
        # The relay reads only what is pending; this index stays as small as the backlog.
        "CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL",
        "CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL",
    ),
    (  # 6: the database enforces what the eligibility rules rely on (settled batches), a refund's time is kept
        # apart from its sale's changes, and a cut-off COMMIT's outcome can be told (one row per writer)
        PerDatabase(
            "CREATE TRIGGER transactions_into_open_batch BEFORE INSERT ON transactions"
            f" WHEN {_SETTLED_BATCH_OF_NEW_ROW} BEGIN SELECT RAISE(ABORT, '{BATCH_SETTLED_MESSAGE}'); END",
            "CREATE FUNCTION iso_host_batch_open() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF {_SETTLED_BATCH_OF_NEW_ROW} THEN RAISE EXCEPTION '{BATCH_SETTLED_MESSAGE}: batch % of % has settled',"
            f" NEW.batch_number, NEW.tid USING ERRCODE = 'check_violation', CONSTRAINT = '{BATCH_SETTLED_MESSAGE}';"
            " END IF; RETURN NEW; END $$",
        ),
        PerDatabase(
            "CREATE TRIGGER transactions_settled_unchanged BEFORE UPDATE ON transactions"
            f" WHEN {_STATUS_CHANGE_OF_SUBSTANCE} AND {_SETTLED_BATCH_OF_NEW_ROW}"
            f" BEGIN SELECT RAISE(ABORT, '{BATCH_SETTLED_MESSAGE}'); END",
            "CREATE TRIGGER transactions_into_open_batch BEFORE INSERT ON transactions FOR EACH ROW"
            " EXECUTE FUNCTION iso_host_batch_open()",
        ),
        PerDatabase(
            "SELECT 1",  # SQLite needed one trigger per event above; PostgreSQL shares the function
            f"CREATE TRIGGER transactions_settled_unchanged BEFORE UPDATE ON transactions FOR EACH ROW"
            f" WHEN ({_STATUS_CHANGE_OF_SUBSTANCE}) EXECUTE FUNCTION iso_host_batch_open()",
        ),
        "ALTER TABLE transactions ADD COLUMN refunded_at TEXT",  # a refund's time on its sale (not updated_at)
        "CREATE TABLE ledger_commits ("
        " writer TEXT PRIMARY KEY, group_number BIGINT NOT NULL, committed_at TEXT NOT NULL)",
    ),
    (  # 7: a terminal once keyed (signed on) must MAC until an operator resets it; one signed on now has been
        "ALTER TABLE terminals ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0",
        "UPDATE terminals SET keyed = signed_on",
    ),
    (  # 8: the check values of a session's working keys (hex, 3 bytes), so that keys unwrapped under another TMK
        # (the configured one changed) are noticed at start and the session dropped; a session stored before has none
        "ALTER TABLE terminals ADD COLUMN tpk_kcv TEXT",
        "ALTER TABLE terminals ADD COLUMN tak_kcv TEXT",
        "ALTER TABLE terminals ADD COLUMN tdk_kcv TEXT",
    ),
)
