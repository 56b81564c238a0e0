"""The live-control secret: from ``ISO_HOST_CONTROL_SECRET``, else from the file ``[control] secret_file`` names.

The file must be readable by its owner only (mode 0600 or stricter): a secret others can read authenticates nobody.
Its text, less surrounding white space, is the secret; at least 32 bytes (``openssl rand -hex 32 > FILE`` gives 64).
No message here ever shows the secret, only where it came from and how long it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from iso_host.control.signing import MIN_SECRET_BYTES
from iso_host.errors import ConfigError
from iso_host.private_files import loose_mode

ENV_VAR: Final = "ISO_HOST_CONTROL_SECRET"
MAKE_ONE: Final = "make one with: umask 077; openssl rand -hex 32 > FILE"


def load_secret(path: str | None, environ: Mapping[str, str] | None = None, *, what: str = "control.secret_file"
                ) -> bytes | None:  # fmt: skip
    """The secret, or None when neither the variable nor ``path`` gives one.

    Raises:
        ConfigError: the file cannot be read, others may read it, or the secret is too short (naming ``what``).
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_VAR)
    if value:
        return _long_enough(value.strip().encode("utf-8"), ENV_VAR)
    if path is None:
        return None
    file = Path(path).expanduser()
    try:
        text = file.read_bytes()
    except OSError as error:
        raise ConfigError(f"{what}: cannot read {path}: {error.strerror}") from None
    if (mode := loose_mode(file)) is not None:
        raise ConfigError(f"{what}: {path} is open to others (mode {mode:04o}); chmod 600 {path}")
    return _long_enough(text.strip(), f"{what} ({path})")


def _long_enough(secret: bytes, source: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{source}: the control secret is {len(secret)} bytes, at least {MIN_SECRET_BYTES} are "
                          f"needed; {MAKE_ONE}")  # fmt: skip
    return secret
