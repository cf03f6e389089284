"""A sweep's segments, durable in the platform's storage: one Tune experiment each, under
``sweeps/<sweep id>/seg<k>``, listed in ``segments.json``. A stopped or interrupted sweep restores
its unfinished segment; extending a sweep appends one."""

from __future__ import annotations

import json
import logging
from typing import Any

from ray import tune

from aiplatform.storage import Storage

logger = logging.getLogger(__name__)


def candidate_key(sweep_id: str, trial_id: str) -> str:
    """Where a finished trial keeps its package until the sweep picks the best."""
    return f"sweeps/{sweep_id}/trials/{trial_id}.zip"


def _segments_key(sweep_id: str) -> str:
    return f"sweeps/{sweep_id}/segments.json"


def load_segments(storage: Storage, sweep_id: str) -> list[dict[str, Any]]:
    key = _segments_key(sweep_id)
    return list(json.loads(storage.get_bytes(key))) if storage.exists(key) else []


def save_segments(storage: Storage, sweep_id: str, segments: list[dict[str, Any]]) -> None:
    storage.put_bytes(_segments_key(sweep_id), json.dumps(segments).encode())


def restorable(filesystem: Any, path: str) -> bool:
    """Whether the segment can be restored: Tune writes ``tuner.pkl`` when the Tuner is made but
    its experiment state only once it runs, and restoring without that state fails every time.
    A segment that never got that far is removed and made again."""
    import pyarrow.fs

    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        return False
    names = [info.base_name for info in filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))]
    if any(name.startswith("experiment_state") for name in names):
        return True
    logger.warning("segment %s has no experiment state (it stopped while starting): starting it again", path)
    filesystem.delete_dir(path)
    return False
