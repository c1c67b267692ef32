"""One rule for the environment variables that pick a kernel's backend.

``$AFSD_BMP_BACKEND`` (boundary max pooling), ``$AFSD_SOFTNMS_BACKEND`` (soft-NMS) and
``$AFSD_RESIZE_BACKEND`` (Pillow-exact resize) are read the same way: case and surrounding blanks
do not matter, unset or blank means ``default``, anything else must be one of the allowed names.
"""

from __future__ import annotations

import os
from typing import Sequence

from afsd_cli.errors import ConfigError


def choose_backend(env_var: str, allowed: Sequence[str], default: str = "auto") -> str:
    """The backend named by ``$env_var`` (lower-cased), ``default`` when unset or blank.

    Raises :class:`ConfigError` naming the variable and the allowed values for anything else.
    """
    requested = os.environ.get(env_var, "").strip().lower() or default
    if requested not in allowed:
        raise ConfigError(f"${env_var}={requested!r} is not one of {', '.join(allowed)}")
    return requested
