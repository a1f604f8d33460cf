"""Packaging: the top-level ``kernels/`` folder ships as ``metadip.kernels``."""

from setuptools import setup

setup(
    packages=["metadip", "metadip.kernels"],
    package_dir={"metadip": "metadip", "metadip.kernels": "kernels"},
    package_data={"metadip": ["weights/*.safetensors", "weights/*.json"]},
)
