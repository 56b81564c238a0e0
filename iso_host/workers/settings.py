"""What the core tells a worker it starts: one JSON object in the worker's environment."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Final

from iso_host.config import Config, TlsConfig
from iso_host.limits import Limits

ENVIRONMENT_KEY: Final = "ISO_HOST_WORKER"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    index: int  # 1 .. N, in log lines as ``worker``
    listen_fd: int  # the listening socket the core made, inherited
    hub_path: str  # the core's Unix socket
    dialect: str
    limits: Limits
    tls: TlsConfig | None
    edge: str
    loop: str
    log_format: str
    log_level: str
    sample_approvals: int

    @classmethod
    def for_worker(cls, config: Config, limits: Limits, index: int, listen_fd: int, hub_path: str) -> WorkerSettings:
        return cls(
            index=index, listen_fd=listen_fd, hub_path=hub_path, dialect=config.dialect, limits=limits,
            tls=config.tls, edge=config.edge, loop=config.loop, log_format=config.log_format,
            log_level=config.log_level, sample_approvals=config.log_sample_approvals,
        )  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSettings:
        fields = json.loads(text)
        tls = fields.pop("tls")
        limits = Limits(**fields.pop("limits"))
        return cls(**fields, limits=limits, tls=TlsConfig(**tls) if tls is not None else None)
