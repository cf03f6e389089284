"""Property-based tests of the gateway against its own OpenAPI schema (Schemathesis + Hypothesis):
for a bounded number of generated requests per operation, no 5xx, and every response matches
the status codes, content types and bodies the schema documents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.factories import platform_settings, register_versions, served_platform

EXAMPLES_PER_OPERATION = 6


def _checks() -> list[Any]:
    """No 5xx; status codes, content types, headers and bodies as documented. Not Schemathesis's
    "positive data acceptance": the API validates more than OpenAPI can say (an upload must be
    a decodable image, a state name a known state), and says so with a documented 400."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]


@pytest.fixture(scope="module")
def api_schema(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with platform_settings(tmp_path_factory.mktemp("fuzz"), "fuzz") as settings:
        register_versions(settings, "fuzz", count=2)
        with served_platform(settings) as url:
            yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_the_api_answers_generated_requests_as_its_schema_says(api_schema: Any) -> None:
    # One Hypothesis run per operation, so that every operation gets its examples and one
    # failing operation does not hide another; every failure is reported at the end.
    failures: list[str] = []
    checks = _checks()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 40
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(checks=checks, timeout=60)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
