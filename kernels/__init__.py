"""Triton kernels (installed as ``metadip.kernels``)."""
