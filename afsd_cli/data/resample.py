"""Moved to :mod:`afsd_cli.ops.bicubic_resize`; this alias keeps older imports working."""

import sys

from afsd_cli.ops import bicubic_resize

sys.modules[__name__] = bicubic_resize  # the same module object: its state and names, private ones too
