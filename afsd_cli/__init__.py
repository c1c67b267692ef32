"""afsd: AFSD (anchor-free temporal action localization, CVPR 2021) on today's PyTorch.

Importing this package is cheap: torch, cv2 and friends are imported inside the functions
that need them, so light commands (``afsd --help``, ``afsd evaluate``) start fast.
"""

__version__ = "0.1.0"
