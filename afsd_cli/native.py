"""Moved to :mod:`afsd_cli.ops.native`; this alias keeps older imports working."""

import sys

from afsd_cli.ops import native

sys.modules[__name__] = native  # the same module object: its state and names, private ones too
