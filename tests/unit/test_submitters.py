"""A job submitted straight to Ray acts in the project of the platform key it carries, decided on
the head (``aiplatform.tasks.queue.submitters``, without Ray): a member's key is its project, and
no key, a refused key, a service key or a role below member registers nothing, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform.access.store import AccessStore
from aiplatform.errors import Forbidden, NotFound, Unauthenticated
from aiplatform.tasks.queue.submitters import Submitters

TOKEN = "bootstrap-token-0123456789"


def test_a_jobs_key_decides_its_project_on_the_head(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.create_project("b", by="platform")
    for user, role in (("bo", "member"), ("vi", "viewer")):
        store.create_user(user, role=role, by="platform")  # the same role in default
        store.set_member("b", user, role, by="platform")
    _, member = store.create_key("bo", name="laptop", project="b", by="bo")
    _, viewer = store.create_key("vi", name="laptop", project="b", by="vi")
    _, service = store.create_key("bo", name="app", project="b", models=["m"], by="bo")
    _, revoked = store.create_key("bo", name="old", project="b", by="bo")
    store.revoke_key("bo", store.authenticate(revoked).key_id, by="bo")  # type: ignore[union-attr]
    head = Submitters("token", TOKEN, tmp_path)

    assert head.project(member) == "b"
    assert head.project(member, "default") == "default"  # a project the key's user may create in
    assert head.project(TOKEN) == "default" and head.project(TOKEN, "b") == "b"  # the platform admin
    with pytest.raises(Unauthenticated, match="carries no platform key.*AIP_API_TOKEN"):
        head.project(None)
    with pytest.raises(Unauthenticated, match=r"refused \(no such token or key\)"):
        head.project("aip_" + "x" * 43)
    with pytest.raises(Unauthenticated, match="was revoked"):
        head.project(revoked)
    with pytest.raises(Forbidden, match="service key"):
        head.project(service)
    with pytest.raises(Forbidden, match="no member role in project 'b'"):
        head.project(viewer)
    with pytest.raises(Forbidden, match="no member role in project 'default'"):
        head.project(viewer, "default")
    with pytest.raises(NotFound, match="Project 'nope' not found"):
        head.project(member, "nope")

    # no key needed where the API asks none: authentication off, or no token and no users
    assert Submitters("off", None, tmp_path).project(None) == "default"
    (tmp_path / "fresh").mkdir()
    assert Submitters("token", None, tmp_path / "fresh").project(None, "b") == "b"
    with pytest.raises(Unauthenticated):
        Submitters("token", None, tmp_path).project(None)  # users exist: keys are needed
