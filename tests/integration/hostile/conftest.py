"""The hostile-input suite (docs/SECURITY.md): one platform for the whole package, attacked by every
module in it. A test marked ``breaks_platform`` leaves it unusable, so it runs after all the others."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile import hostile_platform


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "breaks_platform: runs last in the hostile-input suite")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = [item for item in items if "hostile" in item.path.parts]
    last = [item for item in here if item.get_closest_marker("breaks_platform")]
    if not last:
        return
    for item in last:
        items.remove(item)
    end = max(items.index(item) for item in here if item not in last)
    items[end + 1 : end + 1] = last


@pytest.fixture(scope="package")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield from hostile_platform(tmp_path_factory.mktemp("hostile"))
