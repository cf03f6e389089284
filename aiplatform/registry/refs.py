"""How people name a model version in one string: ``NAME@VERSION`` or ``NAME@ALIAS``."""

from __future__ import annotations

from aiplatform.errors import InvalidArgument


def parse_model_ref(text: str) -> tuple[str, str]:
    """``NAME@VERSION`` or ``NAME@ALIAS`` -> (name, ref); a bare NAME means its ``latest``."""
    name, sep, ref = str(text).partition("@")
    if not name or (sep and not ref):
        raise InvalidArgument(f"Model reference {text!r} must look like NAME@VERSION or NAME@ALIAS, e.g. mnist-cnn@3")
    return name, ref or "latest"
