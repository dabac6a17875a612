"""lstm_kernels: drop-in ``torch.nn.LSTM`` / ``LSTMCell`` layers, faster.

Triton kernels on NVIDIA GPUs, a TorchScript-scripted path on CPU, and an eager
reference; one shared layered, bidirectional time loop; ``nn.LSTM``'s API and numbers.
"""
from importlib.metadata import PackageNotFoundError, version

from .backends import available_backends
from .graphs import cuda_graphs
from .modules import LSTM, LSTMCell, explain
from . import quant  # noqa: F401,E402  registers LSTM/LSTMCell with quantize_dynamic's default mapping

try:
    __version__ = version("lstm_kernels")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["LSTM", "LSTMCell", "available_backends", "cuda_graphs", "explain", "__version__"]
