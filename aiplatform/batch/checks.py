"""What creating a batch job checks before anything is queued or stored: the model version exists,
the input exists, has rows, and fits the model's kind and features (the first bad row named)."""

from __future__ import annotations

from aiplatform.batch.inputs import BatchInputs
from aiplatform.batch.params import BatchParams
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.storage import Storage


def check_stored_input(params: BatchParams, storage: Storage) -> None:
    """An uploaded input or a dataset version's split that the job would read: it exists and has rows.

    Raises:
        NotFound: no such upload or dataset version.
        InvalidArgument: the input or split has no rows.
    """
    spec = params.input
    if spec.upload is not None:
        found = BatchInputs(storage).get(spec.upload)
        if found.rows == 0:
            raise InvalidArgument(f"Batch input {spec.upload!r} has no rows to score")
    elif spec.dataset is not None:
        from aiplatform.datasets import DatasetManager

        datasets = DatasetManager(storage)
        if spec.dataset_version is not None:
            version = datasets.get(spec.dataset, spec.dataset_version)
        else:
            versions = datasets.list_versions(spec.dataset)
            if not versions:
                raise NotFound(f"Dataset {spec.dataset!r} has no versions")
            version = versions[0]
        if spec.split not in version.manifest["splits"] or version.rows(spec.split) == 0:
            raise InvalidArgument(f"Dataset {version.ref} has no rows in split {spec.split!r}")
