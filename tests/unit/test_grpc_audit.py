"""Refused gRPC calls of known callers go to the audit log like refused HTTP requests
(``aiplatform.serving.oip_grpc.access``); unknown callers do not (nothing names them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aiplatform.access.store import AccessStore
from aiplatform.errors import Forbidden, Unauthenticated
from aiplatform.serving.oip_grpc.access import grpc_refusal

pytestmark = pytest.mark.unit

TOKEN = "bootstrap-token-0123456789"


def test_a_known_callers_refused_grpc_call_is_audited_off_the_loop(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.create_user("vera", role="viewer", by="platform")
    main, viewer = store.create_key("vera", name="main", by="platform")
    revoked, gone = store.create_key("vera", name="old", by="platform")
    store.revoke_key("vera", revoked["id"], by="platform")

    async def calls() -> list[object]:  # on the gateway's event loop: the entries are written by a worker
        return [
            grpc_refusal("token", TOKEN, f"Bearer {viewer}", store, "alpha"),
            grpc_refusal("token", TOKEN, f"Bearer {gone}", store, None),
            grpc_refusal("token", TOKEN, "Bearer aip_not-a-key-at-all-000000", store, "alpha"),
            grpc_refusal("token", TOKEN, f"Bearer {TOKEN}", store, "alpha"),
        ]

    refused, revoked_refusal, unknown, admin = asyncio.run(calls())  # waits for the loop's workers
    assert isinstance(refused, Forbidden) and "member" in refused.message
    assert isinstance(revoked_refusal, Unauthenticated) and "revoked" in revoked_refusal.message
    assert isinstance(unknown, Unauthenticated) and admin is None
    entries, _ = store.audit()  # two workers may write in either order
    assert {
        (e["principal"], e["key_id"], e["method"], e["resource"], e["action"], e["outcome"], e["status"])
        for e in entries
    } == {
        ("vera", main["id"], "GRPC", "/inference.GRPCInferenceService/models/alpha", "infer", "denied", 403),
        ("vera", revoked["id"], "GRPC", "/inference.GRPCInferenceService/server", "identify", "denied", 401),
    }
