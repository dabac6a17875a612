"""Triton's names of the torch storage dtypes the kernels take."""
import torch

TL_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}

# Storage dtypes whose matmul operands feed the tensor cores as they are (fp32 accumulation).
HALF_DTYPES = (torch.float16, torch.bfloat16)
