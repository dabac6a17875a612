"""The TorchScript backend's CPU scan, and the only package that uses torch.jit: the time
loop of a layer direction runs as one scripted function in the TorchScript interpreter,
with no Python per step (``single``), both directions of a small bidirectional layer share
one loop (``paired``), large float32 matmuls and the input projection go through oneDNN
(``dnn``), and the measured thresholds that choose between these paths live in
``thresholds``. Scripting happens at import, so importing this package first lets a test
poison ``torch.empty`` afterwards (tests/conftest.py)."""
from __future__ import annotations

from .dnn import HAS_DNN_LINEAR, dnn_linear, input_projection
from .paired import paired_scan, scan_bidirectional, use_paired
from .single import scan

__all__ = [
    "HAS_DNN_LINEAR",
    "dnn_linear",
    "input_projection",
    "paired_scan",
    "scan",
    "scan_bidirectional",
    "use_paired",
]
