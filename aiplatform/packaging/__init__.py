"""The model package format: a verified ZIP (``format``) and the weight forms inside it (``weights``).

The names below load on first use (PEP 562), so a module that only needs a package's config
(``aiplatform.packaging.config``: the model kinds, every job's driver) does not load torch with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiplatform.lazy_names import lazy_names

if TYPE_CHECKING:
    from aiplatform.packaging.format import (
        MODEL_FILE,
        PACKAGE_FORMAT,
        ModelPackage,
        build_package,
        load_package,
        read_package_files,
    )
    from aiplatform.packaging.weights import decode_model, encode_weights

_HOMES = {
    "MODEL_FILE": "aiplatform.packaging.format",
    "PACKAGE_FORMAT": "aiplatform.packaging.format",
    "ModelPackage": "aiplatform.packaging.format",
    "build_package": "aiplatform.packaging.format",
    "load_package": "aiplatform.packaging.format",
    "read_package_files": "aiplatform.packaging.format",
    "decode_model": "aiplatform.packaging.weights",
    "encode_weights": "aiplatform.packaging.weights",
}
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


__getattr__ = lazy_names(__name__, _HOMES, globals())
