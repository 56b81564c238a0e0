"""A host that runs out of file descriptors on purpose, for test_open_files.py: ``python starved_host.py DIR``.

It starts on a free port with max_connections far above what it can hold (no fitting to the open-file limit, as
if something else had taken the files), prints its address as a JSON line, lowers its own open-file limit to a few
above the files it holds, and serves, logging JSON lines to stdout, until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
from pathlib import Path

from hosting import running_host

from iso_host.limits import Limits
from iso_host.log import configure

SPARE_FILES = 4  # room for a few connections, then accept fails with EMFILE


async def main(directory: Path) -> None:
    configure("json", "info")
    async with running_host(directory, "iso87binary", Limits(max_connections=1_000)) as host:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        limit = len(os.listdir("/proc/self/fd")) + SPARE_FILES
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        print(json.dumps({"event": "starved", "port": host.address[1], "open_file_limit": limit}), flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
