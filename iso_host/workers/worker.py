"""A protocol worker process (``python -m iso_host.workers.worker``, started by the core, never by hand).

It accepts on the listening socket it inherited, runs the edge (TLS, framing, limits, timeouts, the answer's log
line) and asks the core for every answer. SIGTERM or SIGINT stops it gracefully (requests in the pipeline are
answered); so does losing the core, with one line saying so and exit status 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

from iso_host.errors import ConfigError
from iso_host.event_loops import event_loop
from iso_host.gate import fit_open_file_limit
from iso_host.log import configure, get_logger
from iso_host.server import Edge, Server
from iso_host.tls import server_context
from iso_host.wire import load_dialect
from iso_host.workers.remote import RemoteHost
from iso_host.workers.settings import ENVIRONMENT_KEY, WorkerSettings


async def serve(settings: WorkerSettings) -> int:
    log = get_logger(worker=settings.index)
    dialect = load_dialect(settings.dialect)
    tls = settings.tls
    ssl_context = server_context(tls.cert, tls.key, tls.client_ca) if tls is not None else None
    limits = fit_open_file_limit(settings.limits, log)
    remote = await RemoteHost.connect(settings.hub_path, dialect, settings.index)
    edge: Edge = "streams" if settings.edge == "streams" else "protocol"
    server = Server(remote, limits, ssl_context=ssl_context, edge=edge, log_fields={"worker": settings.index})
    listening = socket.socket(fileno=settings.listen_fd)
    await server.start(sock=listening)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stopped = loop.create_task(stop.wait())
    lost = loop.create_task(remote.lost.wait())
    await asyncio.wait((stopped, lost), return_when=asyncio.FIRST_COMPLETED)
    core_lost = not stop.is_set()
    for task in (stopped, lost):
        task.cancel()
    if core_lost:
        log.error("worker_lost_core", why=remote.problem, hub=settings.hub_path, hint="the serve process ended")
    await server.stop(grace_s=0.0 if core_lost else 10.0)
    remote.close()
    return 1 if core_lost else 0


def main() -> int:
    text = os.environ.get(ENVIRONMENT_KEY)
    if text is None:
        print(f"iso-host worker: {ENVIRONMENT_KEY} is not set; workers are started by iso-host serve --workers N",
              file=sys.stderr)  # fmt: skip
        return 2
    settings = WorkerSettings.from_json(text)
    configure(settings.log_format, settings.log_level, sample_approvals=settings.sample_approvals)
    try:
        _, loop_factory = event_loop(settings.loop)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(settings))
    except ConfigError as error:
        print(f"iso-host worker {settings.index}: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the core's hub is not there: a worker started by hand, or the core is gone
        print(f"iso-host worker {settings.index}: cannot reach the core at {settings.hub_path}: {error}",
              file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
