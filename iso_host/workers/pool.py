"""The core's workers: started as processes sharing one listening socket, restarted when one dies, stopped in order.

The core binds and listens once and hands the socket down (``pass_fds``), rather than each worker binding with
``SO_REUSEPORT``: with that option a second ``iso-host serve`` by the same user would bind the same port and silently
take a share of the terminals, where one inherited socket makes it fail with "address in use". Terminals hold their
connections for long, so accept()'s wake-ups on a shared socket cost nothing that matters.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Final

from iso_host.config import MAX_WORKERS, Config
from iso_host.core.pipeline import Host
from iso_host.errors import ConfigError
from iso_host.limits import ACCEPT_BACKLOG, Limits
from iso_host.log import get_logger
from iso_host.server import cannot_listen
from iso_host.workers.hub import Hub
from iso_host.workers.settings import ENVIRONMENT_KEY, WorkerSettings

READY_TIMEOUT_S: Final = 30.0  # every worker listening and linked to the core; a worker starts in about a second
RESTART_DELAY_S: Final = 1.0  # between a worker's death and its replacement: a worker that dies at once must not spin
STOP_TIMEOUT_S: Final = 15.0  # a worker's graceful stop (its own grace is 10 s), then it is killed


def worker_limits(limits: Limits, count: int) -> Limits:
    """Each worker's share of ``max_connections`` (rounded up); the per-peer bound applies in each worker."""
    return replace(limits, max_connections=max(1, -(-limits.max_connections // count)))


def listening_socket(host: str, port: int) -> socket.socket:
    """The one listening socket every worker accepts on.

    Raises:
        ConfigError: the address cannot be listened on (one line, as ``serve`` without workers says it).
    """
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.create_server((host, port), family=family, backlog=ACCEPT_BACKLOG)
    except OSError as error:
        raise cannot_listen(host, port, error) from None
    listening.set_inheritable(True)
    return listening


class WorkerPool:
    """``count`` worker processes in front of ``host``."""

    def __init__(self, host: Host, config: Config, limits: Limits, count: int) -> None:
        if not 1 <= count <= MAX_WORKERS:
            raise ConfigError(f"server.workers: must be 1..{MAX_WORKERS}, got {count}")
        self.count = count
        self.config = config
        self.limits = worker_limits(limits, count)
        self.log = get_logger(dialect=host.dialect.name)
        self._directory = tempfile.mkdtemp(prefix="iso-host-core-")  # 0700: only this user reaches the hub
        self.hub = Hub(host, str(Path(self._directory) / "core.sock"))
        self.listening: socket.socket | None = None
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self.stopping = False

    @property
    def connection_count(self) -> None:
        """Not known here: each worker counts its own connections and logs them when it stops."""
        return None

    @property
    def serving(self) -> bool:
        """Listening, with every worker linked to the core."""
        return self.listening is not None and not self.stopping and len(self.hub.workers) == self.count

    def connected_terminals(self) -> None:
        """Not known here: connections live in the workers."""
        return

    @property
    def address(self) -> tuple[str, int]:
        assert self.listening is not None
        bound = self.listening.getsockname()
        return str(bound[0]), int(bound[1])

    async def start(self) -> tuple[str, int]:
        """Listen, start the hub and the workers, and return once every worker is linked.

        Raises:
            ConfigError: the address is taken, or a worker could not start (its own line says why).
        """
        self.listening = listening_socket(self.config.host, self.config.port)
        try:
            await self.hub.start()
            for index in range(1, self.count + 1):
                self.processes[index] = await self._spawn(index)
                self._watchers.append(asyncio.get_running_loop().create_task(self._watch(index)))
            await self._until_ready()
        except BaseException:
            await self.stop()
            raise
        return self.address

    async def _until_ready(self) -> None:
        ready = asyncio.ensure_future(self.hub.wait_for(lambda: len(self.hub.workers) == self.count))
        died = [asyncio.ensure_future(process.wait()) for process in self.processes.values()]
        try:
            done, _ = await asyncio.wait((ready, *died), timeout=READY_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            for waiter in (ready, *died):
                waiter.cancel()
        if ready not in done:
            failed = [index for index, process in self.processes.items() if process.returncode is not None]
            why = f"worker {failed[0]} exited" if failed else f"not every worker was ready within {READY_TIMEOUT_S:g} s"
            raise ConfigError(f"server.workers: {why} (its line above says why)")

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        assert self.listening is not None
        settings = WorkerSettings.for_worker(self.config, self.limits, index, self.listening.fileno(), self.hub.path)
        environment = dict(os.environ, **{ENVIRONMENT_KEY: settings.to_json()})
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "iso_host.workers.worker", env=environment, pass_fds=(self.listening.fileno(),)
        )

    async def _watch(self, index: int) -> None:
        """Replace worker ``index`` whenever it dies while the host is not stopping."""
        while True:
            process = self.processes[index]
            status = await process.wait()
            if self.stopping:
                return
            self.log.error("worker_exited", worker=index, pid=process.pid, status=status, restart_in_s=RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)
            if self.stopping:
                return
            self.processes[index] = await self._spawn(index)
            self.log.info("worker_restarted", worker=index, pid=self.processes[index].pid)

    async def stop(self) -> None:
        """Workers stop first (each answers what is in its pipeline, through the hub), then the hub."""
        self.stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        running = [p for p in self.processes.values() if p.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        if running:
            _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running], timeout=STOP_TIMEOUT_S)
            if late:
                for process in running:
                    if process.returncode is None:
                        process.kill()
                await asyncio.gather(*(p.wait() for p in running))
        await self.hub.stop()
        if self.listening is not None:
            self.listening.close()
        shutil.rmtree(self._directory, ignore_errors=True)
