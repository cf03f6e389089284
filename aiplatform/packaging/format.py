"""Model packages: one verified ZIP with weights, ``model.json`` and ``manifest.json``.

Layout::

    model.json            architecture, hyperparameters, input spec, labels, preprocessing,
                          compression (absent for float32 weights; see weights.py)
    weights.safetensors   tensors only (never a pickle, so loading runs no code), or
    model.onnx            for an ``onnx`` architecture: a self-contained ONNX graph (onnx_graph.py)
    model.xgb.json        for an ``xgboost`` architecture: the booster in XGBoost's JSON format
                          (xgboost_model.py)
    manifest.json         sha256 and size of every other file, library versions, metrics, lineage

Loading checks the archive before trusting any of it: entry names (no absolute paths, no ``..``),
entry and total sizes, the required files, no unlisted files, and every sha256.
"""

from __future__ import annotations

import io
import json
import platform
import posixpath
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from aiplatform.errors import IntegrityError, InvalidArgument
from aiplatform.packaging.config import ModelConfig
from aiplatform.packaging.onnx_graph import ONNX_ARCHITECTURE, ONNX_FILE, load_graph
from aiplatform.packaging.weights import decode_model
from aiplatform.packaging.xgboost_model import XGBOOST_ARCHITECTURE, XGBOOST_FILE, load_booster
from aiplatform.storage import sha256_bytes

PACKAGE_FORMAT = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (MODEL_FILE, MANIFEST_FILE)
"""Every package has these, and its model's file: ``weights.safetensors`` or a serialized model."""
SERIALIZED_MODELS: dict[str, tuple[str, Callable[[bytes, dict[str, Any]], torch.nn.Module]]] = {
    ONNX_ARCHITECTURE: (ONNX_FILE, load_graph),
    XGBOOST_ARCHITECTURE: (XGBOOST_FILE, load_booster),
}
"""Architectures whose package holds one serialized model file (and its loader) in place of
weights: the file is read by its own runtime, never unpickled, and runs on the CPU."""
DEFAULT_MAX_PACKAGE_BYTES = 2 * 1024**3
DEFAULT_MAX_ENTRY_BYTES = 1024**3
MAX_ENTRIES = 64


@dataclass
class ModelPackage:
    """A loaded, verified package: the module in eval mode and its metadata."""

    model: torch.nn.Module
    config: ModelConfig
    manifest: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def cpu_only(self) -> bool:
        """int8 layers run on CPU kernels only, serialized models (ONNX graphs, boosters) on their
        runtime's CPU code."""
        return (self.config.compression or {}).get("weights") == "int8" or serialized_file(self.config) is not None


def library_versions() -> dict[str, str]:
    import ray
    import safetensors

    from aiplatform import __version__

    return {
        "aiplatform": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "safetensors": safetensors.__version__,
    }


def serialized_file(config: ModelConfig) -> str | None:
    """The package file of an architecture stored as a serialized model, None for weights."""
    entry = SERIALIZED_MODELS.get(str(config.architecture.get("type")))
    return entry[0] if entry else None


def build_package(
    *,
    model_config: ModelConfig | dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
    model_file: bytes | None = None,
) -> bytes:
    """Serialize weights (or, for a serialized architecture, its checked model file: an ONNX graph,
    a booster's JSON) and metadata into package bytes (deterministic apart from created_at)."""
    config = ModelConfig.parse(model_config, stored=False)
    files: dict[str, bytes] = {MODEL_FILE: json.dumps(config.to_json_dict(), indent=2, sort_keys=True).encode()}
    serialized = serialized_file(config)
    if serialized is not None:
        if model_file is None or state_dict is not None:
            raise InvalidArgument(
                f"A {config.architecture.get('type')} architecture's package holds its "
                f"{serialized} (model_file), not a state_dict"
            )
        files[serialized] = model_file
    else:
        if state_dict is None:
            raise InvalidArgument(f"A {config.architecture.get('type')} architecture's package needs its weights")
        # Validate that the weights fit the architecture (and its compression) before anything is written.
        decode_model(config, state_dict)
        files[WEIGHTS_FILE] = save_safetensors({k: v.detach().cpu().contiguous() for k, v in state_dict.items()})
    for name, data in (extra_files or {}).items():
        _check_entry_name(name)
        files[name] = data
    manifest = {
        "format": PACKAGE_FORMAT,
        "created_at": time.time(),
        "files": {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in files.items()},
        "versions": library_versions(),
        "metrics": metrics,
        "lineage": lineage,
    }
    files[MANIFEST_FILE] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def _check_entry_name(name: str) -> None:
    normalized = posixpath.normpath(name)
    if (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or ":" in name
        or normalized != name
        or normalized.startswith("..")
        or "/../" in f"/{name}/"
    ):
        raise IntegrityError(f"Package entry {name!r} has an unsafe path (absolute or '..')")


def read_package_files(
    data: bytes,
    *,
    max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Open and verify a package's files; returns (files, manifest). Never executes content.

    Order matters for hostile packages: the ZIP's central directory is checked first (entry
    names, sizes each and in total), then ``manifest.json`` alone is read; only entries the
    manifest lists, with the sizes it gives, are decompressed, each read no further than that
    size and checked against its sha256."""
    if len(data) > max_package_bytes:
        raise InvalidArgument(f"Package is {len(data)} bytes, over the limit of {max_package_bytes}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise IntegrityError(f"Package is not a valid ZIP archive: {exc}") from exc
    with archive:
        infos = {info.filename: info for info in _checked_directory(archive, max_package_bytes, max_entry_bytes)}
        missing = [name for name in REQUIRED_FILES if name not in infos]
        if missing:
            raise IntegrityError(f"Package is missing {missing}")
        manifest_info = infos[MANIFEST_FILE]
        try:
            manifest = json.loads(_read_entry(archive, manifest_info, manifest_info.file_size))
            listed = manifest["files"]
            declared = {name: int(entry["size"]) for name, entry in listed.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"Package manifest.json is not valid: {exc}") from exc
        for name in infos:
            if name != MANIFEST_FILE and name not in listed:
                raise IntegrityError(f"Package entry {name!r} is not listed in manifest.json")
        for name, size in declared.items():
            if name not in infos:
                raise IntegrityError(f"Package manifest lists {name!r} but the archive lacks it")
            if infos[name].file_size != size:
                raise IntegrityError(
                    f"Package entry {name!r} is {infos[name].file_size} bytes in the archive "
                    f"but {size} in manifest.json"
                )
        files: dict[str, bytes] = {MANIFEST_FILE: _read_entry(archive, manifest_info, manifest_info.file_size)}
        for name, size in declared.items():
            content = _read_entry(archive, infos[name], size)
            actual = sha256_bytes(content)
            if actual != listed[name].get("sha256"):
                raise IntegrityError(
                    f"Package entry {name!r} fails verification: sha256 {actual} != manifest "
                    f"{listed[name].get('sha256')}"
                )
            files[name] = content
    return files, manifest


def _checked_directory(archive: zipfile.ZipFile, max_total_bytes: int, max_entry_bytes: int) -> list[zipfile.ZipInfo]:
    """The archive's entries once their names and declared sizes are safe."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise IntegrityError(f"Package has {len(infos)} entries, more than {MAX_ENTRIES}")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise IntegrityError("Package has duplicate entries")
    for info in infos:
        _check_entry_name(info.filename)
        if info.file_size > max_entry_bytes:
            raise IntegrityError(
                f"Package entry {info.filename!r} is {info.file_size} bytes, over the limit of {max_entry_bytes}"
            )
    total = sum(info.file_size for info in infos)
    if total > max_total_bytes:
        raise IntegrityError(f"Package unpacks to {total} bytes, over the limit of {max_total_bytes}")
    return infos


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> bytes:
    """One entry, decompressed no further than one byte past ``size`` (a lying header is caught)."""
    try:
        with archive.open(info) as handle:
            content = handle.read(size + 1)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise IntegrityError(f"Package entry {info.filename!r} cannot be read: {exc}") from exc
    if len(content) != size:
        raise IntegrityError(f"Package entry {info.filename!r} holds {len(content)} bytes, not the {size} declared")
    return content


def load_package(
    data: bytes,
    *,
    max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
) -> ModelPackage:
    """Verify a package and build its model in eval mode."""
    files, manifest = read_package_files(data, max_package_bytes=max_package_bytes, max_entry_bytes=max_entry_bytes)
    try:
        config = ModelConfig.parse(json.loads(files[MODEL_FILE]))
    except ValueError as exc:
        raise IntegrityError(f"Package model.json is not valid JSON: {exc}") from exc
    serialized = serialized_file(config)
    model_file = serialized or WEIGHTS_FILE
    if model_file not in files:
        raise IntegrityError(f"Package is missing {[model_file]}")
    if serialized is not None:
        load = SERIALIZED_MODELS[str(config.architecture["type"])][1]
        return ModelPackage(model=load(files[serialized], config.architecture), config=config, manifest=manifest)
    try:
        state_dict = load_safetensors(files[WEIGHTS_FILE])
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise IntegrityError(f"Package weights cannot be read: {exc}") from exc
    model = decode_model(config, state_dict)
    model.eval()
    return ModelPackage(model=model, config=config, manifest=manifest)
