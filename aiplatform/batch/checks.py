"""What creating a batch job checks before anything is queued or stored: the model version exists,
the input exists, has rows, and fits the model's kind and features (the first bad row named)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiplatform.batch.inputs import BatchInputs
from aiplatform.batch.params import BatchParams
from aiplatform.errors import IntegrityError, InvalidArgument, TooLarge
from aiplatform.kinds import ModelKind, kind_for
from aiplatform.limits import RequestLimits
from aiplatform.packaging.config import ModelConfig
from aiplatform.storage import Storage
from aiplatform.storage.projects import DEFAULT_PROJECT

if TYPE_CHECKING:
    from aiplatform.batch.sources import RowSource
    from aiplatform.registry import ModelVersion
    from aiplatform.registry.store import RegistryAPI


def check_stored_input(params: BatchParams, storage: Storage, project: str = DEFAULT_PROJECT) -> int | None:
    """An uploaded input or a dataset version's split (of ``project``, the job's) that the job
    would read: it exists and has rows. Returns its rows (``None`` for a ``uri``, read only when the job starts).

    Raises:
        NotFound: no such upload or dataset version.
        InvalidArgument: the input or split has no rows.
    """
    spec = params.input
    if spec.upload is not None:
        found = BatchInputs(storage).get(spec.upload, project)
        if found.rows == 0:
            raise InvalidArgument(f"Batch input {spec.upload!r} has no rows to score")
        return found.rows
    if spec.dataset is not None:
        from aiplatform.batch.sources import dataset_version

        version = dataset_version(spec, storage, project)
        if spec.split not in version.manifest["splits"] or version.rows(spec.split) == 0:
            raise InvalidArgument(f"Dataset {version.ref} has no rows in split {spec.split!r}")
        return int(version.rows(spec.split))
    return None


def check_output_size(params: BatchParams, input_rows: int, max_output_rows: int) -> int:
    """The rows the job would score (the input's, or ``max_rows`` when fewer) are within
    ``AIP_BATCH_MAX_OUTPUT_ROWS``: a job's output is a row per input row. Returns those rows.

    Raises:
        TooLarge: more rows than the setting allows (413).
    """
    rows = min(input_rows, params.max_rows or input_rows)
    if rows > max_output_rows:
        raise TooLarge(
            f"Batch input {params.input.describe()} would score {rows} rows; the most one job may "
            f"write is {max_output_rows} (AIP_BATCH_MAX_OUTPUT_ROWS): set max_rows or split the input"
        )
    return rows


SAMPLE_ROWS = 32
"""Rows of the input decoded at creation: a mismatch with the model shows in the first rows."""


def check_batch(
    params: BatchParams,
    storage: Storage,
    registry: RegistryAPI,
    *,
    max_output_rows: int | None = None,
    project: str = DEFAULT_PROJECT,
) -> ModelVersion:
    """Everything creating a batch job of ``project`` checks: the model version exists (its
    package intact), the input exists (a dataset among the project's) and has rows, no more than ``max_output_rows`` of them would be scored
    (``AIP_BATCH_MAX_OUTPUT_ROWS``; a ``uri`` input's when the job reads it), and its first rows
    decode as the model's inputs. Returns the version the model reference means now.

    Raises:
        NotFound: no such model, version, alias, dataset version or upload.
        TooLarge: the output would hold more rows than ``max_output_rows``.
        InvalidArgument: an empty input, or one that does not fit the model's kind or features
            (the message names the first row that does not).
    """
    from aiplatform.batch.sources import resolve_source

    version = registry.resolve(params.model_name, params.model_ref)
    config = model_config(storage, version)
    rows = check_stored_input(params, storage, project)
    if rows is not None and max_output_rows is not None:
        check_output_size(params, rows, max_output_rows)
    if params.input.uri is not None:
        return version  # read when the job starts; its rows are checked there
    source = resolve_source(params.input, storage, project)
    check_fits(kind_for(config), source, storage, f"{version.name}@{version.version}")
    return version


def model_config(storage: Storage, version: ModelVersion) -> ModelConfig:
    """A version's ``model.json``, from its package checked against the registered sha256."""
    from aiplatform.packaging.format import MODEL_FILE, read_package_files
    from aiplatform.storage import sha256_bytes

    data = storage.get_bytes(version.package_key)
    if sha256_bytes(data) != version.sha256:
        raise IntegrityError(
            f"Package of model version (name={version.name}, version={version.version}) does not match its sha256"
        )
    files, _ = read_package_files(data)
    return ModelConfig.parse(json.loads(files[MODEL_FILE]))


def check_fits(kind: ModelKind, source: RowSource, storage: Storage, model: str) -> None:
    """The first rows of ``source`` decode as ``kind``'s inputs of the model's shape."""
    from aiplatform.batch.scoring import decode_uploaded
    from aiplatform.batch.sources import DATASET

    sample = source.read(storage, 0, min(SAMPLE_ROWS, source.rows))
    if sample.num_rows == 0:
        raise InvalidArgument(f"Input {source.describe} has no rows to score")
    if source.kind != DATASET:
        decode_uploaded(kind, sample, str(source.format), str(source.filename), RequestLimits())
        return
    if source.data_kind != kind.name:
        raise InvalidArgument(
            f"Dataset {source.describe} holds {source.data_kind} rows; model {model} takes {kind.name} inputs"
        )
    names = [f["name"] for f in source.manifest.get("table", {}).get("features", [])]
    if names and names != list(kind.feature_names):
        raise InvalidArgument(
            f"Dataset {source.describe} has the features {names[:20]}; model {model} takes "
            f"{list(kind.feature_names)[:20]} in that order"
        )
    served = tuple(kind.to_tensor(kind.sample_batch()).shape[1:])
    columns = {name: sample.column(name).to_numpy(zero_copy_only=False) for name in sample.column_names}
    try:
        inputs, _ = kind.batch_converter()(columns)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise InvalidArgument(
            f"Dataset {source.describe} row {_plain(columns['id'][0])!r} cannot be read as model {model}'s input: {exc}"
        ) from None
    if tuple(inputs.shape[1:]) != served:
        raise InvalidArgument(
            f"Dataset {source.describe} rows are inputs of shape {list(inputs.shape[1:])}; model {model} "
            f"takes {list(served)}"
        )


def _plain(value: Any) -> str:
    """A row id as its caller wrote it (a numpy scalar's value, not its repr)."""
    return str(value.item() if hasattr(value, "item") else value)
