"""Triton kernels for the ``triton`` backend.

Importing this package imports triton; ``backends.py`` only does so when the triton
backend is asked for, so the rest of lstm_kernels works without triton installed.
"""
