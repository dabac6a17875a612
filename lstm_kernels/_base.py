"""The backend contract and the environment checks: a leaf module.

Every backend subclasses :class:`Backend`; the registry (``backends.py``) imports the
backends, and no backend imports the registry. This module imports nothing from the
package, so any module may import it without creating a cycle.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor


class Backend:
    """A backend supplies the scan over time of one layer direction (see ``ops.py``).

    ``scan_layer`` runs all directions of a layer; a backend may override it to run both
    directions in one launch, and ``input_projection`` (default ``F.linear``) to pick the
    matmul for the input projection that ``loop.py`` hoists out of the scan.
    """

    name = "base"
    # A backend that sets this runs the whole layered computation itself (``run_layers``)
    # instead of supplying a scan to ``loop.lstm_layers``; it is then handed a
    # PackedSequence's data and batch_sizes as they are, without padding.
    runs_layers = False

    def run_layers(self, x, h0, c0, weights, num_layers, num_directions, dropout, training, batch_sizes):
        """All layers at once (only when ``runs_layers``); same contract as ``loop.lstm_layers``
        except that with ``batch_sizes`` ``x`` and ``out`` are packed data ``[N, *]``."""
        raise NotImplementedError

    def input_projection(self, x: Tensor, w_ih: Tensor, bias: Optional[Tensor]) -> Tensor:
        """One layer's input projection, all steps and directions: ``x @ w_ih.T + bias``."""
        return F.linear(x, w_ih, bias)

    def scan(self, gx, h0, c0, w_hh, w_hr, batch_sizes: Optional[Tensor], reverse: bool):
        raise NotImplementedError

    def scan_layer(
        self,
        gxs: Sequence[Tensor],
        h0s: Sequence[Tensor],
        c0s: Sequence[Tensor],
        w_hhs: Sequence[Tensor],
        w_hrs: Sequence[Optional[Tensor]],
        batch_sizes: Optional[Tensor],
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """All directions of one layer; direction ``d`` runs reversed when ``d == 1``."""
        return [
            self.scan(gxs[d], h0s[d], c0s[d], w_hhs[d], w_hrs[d], batch_sizes, reverse=d == 1)
            for d in range(len(gxs))
        ]


def triton_interpreting() -> bool:
    """Whether Triton kernels run on CPU through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
