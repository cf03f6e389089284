"""The model package format: a verified ZIP (``format``) and the weight forms inside it (``weights``)."""

from aiplatform.packaging.format import (
    MODEL_FILE,
    PACKAGE_FORMAT,
    ModelPackage,
    build_package,
    load_package,
    read_package_files,
)
from aiplatform.packaging.weights import decode_model, encode_weights

__all__ = [
    "MODEL_FILE",
    "PACKAGE_FORMAT",
    "ModelPackage",
    "build_package",
    "decode_model",
    "encode_weights",
    "load_package",
    "read_package_files",
]
