"""Optical flow for the AFSD flow stream: our batched PyTorch TV-L1 plus OpenCV backends.

Public API: ``compute_flow`` (RGB frames → uint8 flow npy layout), ``compute_flow_float``
(float flow of consecutive pairs), ``quantize_flow`` / ``dequantize_flow`` (±20 px ↔ uint8),
``available_methods`` and ``METHODS``. Torch and cv2 are imported lazily.
"""

from afsd_cli.data.flow.api import (
    METHOD_DESCRIPTIONS,
    METHODS,
    available_methods,
    compute_flow,
    compute_flow_float,
    to_grey,
)
from afsd_cli.data.flow.quantize import FLOW_BOUND, dequantize_flow, quantize_flow

__all__ = [
    "FLOW_BOUND",
    "METHODS",
    "METHOD_DESCRIPTIONS",
    "available_methods",
    "compute_flow",
    "compute_flow_float",
    "dequantize_flow",
    "quantize_flow",
    "to_grey",
]
