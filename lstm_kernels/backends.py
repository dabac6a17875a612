"""Backend registry: names, availability and the backend object for each name.

``backend="auto"`` is chosen one level up, in ``dispatch.py``, which measures.

The registry imports the backends; no backend imports it. The contract every backend
implements is ``_base.Backend``; everything else (layers, when the projection runs,
bidirectional wiring, dropout, layouts) is the shared loop in ``loop.py``.
"""
from __future__ import annotations

import torch

from . import reference
from ._base import Backend, triton_importable, triton_interpreting
from .native import NativeBackend

BACKEND_NAMES = ("auto", "native", "reference", "torchscript", "triton")


class ReferenceBackend(Backend):
    name = "reference"

    def scan(self, gx, h0, c0, w_hh, w_hr, batch_sizes, reverse):
        bs = None if batch_sizes is None else batch_sizes.tolist()
        return reference.lstm_scan(gx, h0, c0, w_hh, w_hr, bs, reverse)


class TorchScriptBackend(Backend):
    name = "torchscript"

    def scan(self, gx, h0, c0, w_hh, w_hr, batch_sizes, reverse):
        from .scripted import scan

        return scan(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse)

    def scan_layer(self, gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes):
        """Both directions of a small padded layer in one scripted loop (``scripted.use_paired``)."""
        if len(gxs) == 2:
            from .scripted import scan_bidirectional, use_paired

            if use_paired(gxs[0], h0s[0], c0s[0], batch_sizes):
                return scan_bidirectional(gxs, h0s, c0s, w_hhs, w_hrs)
        return super().scan_layer(gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes)

    def input_projection(self, x, w_ih, bias):
        from .scripted import input_projection

        return input_projection(x, w_ih, bias)


_INSTANCES: dict[str, Backend] = {
    "native": NativeBackend(),
    "reference": ReferenceBackend(),
    "torchscript": TorchScriptBackend(),
}


def check_backend_name(name) -> str:
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKEND_NAMES))}; got {name!r}")
    return name


def _triton_backend(device: torch.device) -> Backend:
    if not triton_importable():
        raise RuntimeError(
            "backend='triton' needs the triton package (pip install 'lstm_kernels[gpu]'); "
            "use backend='torchscript' or 'reference' instead"
        )
    from ._triton.backend import TritonBackend, check_device

    check_device(device)
    if "triton" not in _INSTANCES:
        _INSTANCES["triton"] = TritonBackend()
    return _INSTANCES["triton"]


def resolve(name: str, device: torch.device) -> Backend:
    """The backend object that runs ``name`` for tensors on ``device``."""
    check_backend_name(name)
    if name == "auto":
        # The measured choice is dispatch.py's; this is the fallback for callers without a problem.
        name = "triton" if _triton_usable(device) else "torchscript"
    if name == "triton":
        return _triton_backend(device)
    return _INSTANCES[name]


def _triton_usable(device: torch.device) -> bool:
    return device.type == "cuda" and "triton" in available_backends()


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine (``"auto"`` not included)."""
    names = ["native", "reference", "torchscript"]
    if triton_importable() and (triton_interpreting() or torch.cuda.is_available()):
        names.append("triton")
    return names
