"""Ground truth in the real SQLite result store: labels by result, request and client id, all or
nothing per batch, the audit trail, archived results, and accuracy / macro-F1 as scikit-learn
computes them."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.results import PredictionRecord
from aiplatform.results.archive import RetainedResultStore, RetentionPolicy
from aiplatform.results.feedback import (
    LabelRequest,
    parse_label_csv,
    parse_label_rows,
    quality_of,
    result_time,
)
from aiplatform.results.store import ResultStore, labeled_cursor, labeled_since, new_result_id
from aiplatform.storage import LocalStorage

pytestmark = pytest.mark.unit
CLASSES = ["cat", "dog", "bird"]
ALLOWED = {("m", 1): CLASSES, ("m", 2): CLASSES}


def record(result_id: str, predicted: str = "cat", *, version: int = 1, at: float | None = None, client_id=None):  # type: ignore[no-untyped-def]
    return PredictionRecord(
        id=result_id,
        model="m",
        version=version,
        input_digest="d",
        output={"label": predicted, "probability": 0.9},
        latency_ms=1.0,
        created_at=time.time() if at is None else at,
        input_uri=f"results/inputs/{result_id}",
        client_id=client_id,
    )


@pytest.fixture()
def store(tmp_path: Path) -> ResultStore:
    store = ResultStore(tmp_path / "results.sqlite")
    store.record_batch(
        [
            record("r1", "cat"),
            record("r2", "dog"),
            record("req9-0", "cat", client_id="client-9"),
            record("req9-1", "bird", client_id="client-9"),
            record("r3", "dog", version=2, client_id="client-3"),
        ]
    )
    return store


def test_a_label_is_kept_and_a_later_one_replaces_it_with_both_in_the_history(store: ResultStore) -> None:
    [first] = store.label([LabelRequest("dog", id="r1")], ALLOWED, "api")
    assert first == {
        "id": "r1",
        "model": "m",
        "version": 1,
        "predicted": "cat",
        "label": "dog",
        "previous_label": None,
        "correct": False,
        "changed": True,
    }
    [second] = store.label([LabelRequest("cat", id="r1")], ALLOWED, "alice")
    assert second["previous_label"] == "dog" and second["correct"]
    assert store.feedback_of(["r1", "r2"]) == {
        "r1": {"label": "cat", "labeled_at": pytest.approx(time.time(), abs=60), "labeled_by": "alice"}
    }
    history = store.feedback_history("r1")
    assert [(h["label"], h["previous_label"], h["labeled_by"]) for h in history] == [
        ("dog", None, "api"),
        ("cat", "dog", "alice"),
    ]
    # the same label again changes nothing and adds nothing to the history
    assert store.label([LabelRequest("cat", id="r1")], ALLOWED, "api")[0]["changed"] is False
    assert len(store.feedback_history("r1")) == 2


def test_labels_by_request_id_and_by_the_clients_id(store: ResultStore) -> None:
    changes = store.label(
        [
            LabelRequest("bird", request_id="req9", index=1, row=1),
            LabelRequest("dog", client_request_id="client-3", row=2),
            LabelRequest("cat", client_request_id="client-9", index=0, row=3),
        ],
        ALLOWED,
        "api",
    )
    assert [(c["id"], c["label"], c["correct"]) for c in changes] == [
        ("req9-1", "bird", True),
        ("r3", "dog", True),
        ("req9-0", "cat", True),
    ]
    with pytest.raises(InvalidArgument, match="had many inputs"):
        store.resolve_labels([LabelRequest("cat", request_id="req9")])
    with pytest.raises(InvalidArgument, match="names 2 results"):
        store.resolve_labels([LabelRequest("cat", client_request_id="client-9")])
    with pytest.raises(NotFound, match="client request id 'nobody'"):
        store.resolve_labels([LabelRequest("cat", client_request_id="nobody")])


def test_a_bad_row_stores_nothing_and_is_named(store: ResultStore) -> None:
    good = LabelRequest("dog", id="r1", row=1)
    with pytest.raises(NotFound, match="Label row 2: result 'nope' not found"):
        store.label([good, LabelRequest("dog", id="nope", row=2)], ALLOWED, "api")
    with pytest.raises(InvalidArgument, match=r"Label row 2: 'horse' is not a class of m v1; allowed: cat, dog, bird"):
        store.label([good, LabelRequest("horse", id="r2", row=2)], ALLOWED, "api")
    with pytest.raises(InvalidArgument, match="is a prediction of 'm', not 'other'"):
        store.label([LabelRequest("dog", id="r2", model="other")], ALLOWED, "api")
    assert store.feedback_of(["r1", "r2"]) == {} and store.feedback_history("r1") == []
    assert store.quality() == []


def test_quality_equals_scikit_learns_on_the_labeled_rows(tmp_path: Path) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    store = ResultStore(tmp_path / "results.sqlite")
    rng = random.Random(7)
    now = time.time()
    truth: dict[int, tuple[list[str], list[str]]] = {1: ([], []), 2: ([], [])}
    records, requests = [], []
    for i in range(400):
        version = 1 + i % 2
        predicted = rng.choice(CLASSES)
        records.append(record(f"q{i}", predicted, version=version, at=now - 100 + i * 0.1))
        if i % 5 == 4:
            continue  # unlabeled: not counted
        label = predicted if rng.random() < 0.6 else rng.choice(CLASSES[:2])  # "bird" is never a label
        requests.append(LabelRequest(label, id=f"q{i}", row=len(requests) + 1))
        truth[version][0].append(label)
        truth[version][1].append(predicted)
    records.append(record("old", "cat", at=now - 10_000))
    store.record_batch(records)
    store.label([*requests, LabelRequest("dog", id="old", row=len(requests) + 1)], ALLOWED, "api")
    figures = {q.version: q for q in store.quality(model="m", since=now - 1000)}
    for version, (y_true, y_pred) in truth.items():
        q = figures[version]
        assert q.labeled == len(y_true) and q.correct == sum(t == p for t, p in zip(y_true, y_pred))
        assert q.accuracy == pytest.approx(metrics.accuracy_score(y_true, y_pred), abs=1e-12)
        assert q.macro_f1 == pytest.approx(metrics.f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert {q.version: q.labeled for q in store.quality(model="m")}[1] == figures[1].labeled + 1  # no window
    assert [q.version for q in store.quality(model="m", version=2, since=now - 1000)] == [2]


def test_a_hand_computed_macro_f1() -> None:
    # a: tp 2, fp 1, fn 0 -> 0.8; b: tp 1, fp 0, fn 1 -> 2/3; c (only predicted): tp 0, fp 1 -> 0
    q = quality_of("m", 1, {("a", "a"): 2, ("a", "b"): 1, ("b", "b"): 1, ("c", "a"): 0, ("c", "b"): 0})
    assert (q.labeled, q.correct, q.accuracy) == (4, 3, 0.75)
    assert q.macro_f1 == pytest.approx((0.8 + 2 / 3 + 0.0) / 3)


def test_labeled_predictions_since_a_time_page_by_page(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    store.record_batch([record(f"p{i:02d}", "cat", version=1 + i % 2, at=1000.0 + i) for i in range(30)])
    store.label([LabelRequest("dog", id=f"p{i:02d}", row=i + 1) for i in range(0, 30, 3)], ALLOWED, "api")
    first = store.labeled(model="m", since=1005.0, limit=3)
    assert [p.result_id for p in first] == ["p06", "p09", "p12"]
    assert first[0].input_uri == "results/inputs/p06" and first[0].predicted == "cat" and first[0].label == "dog"
    rest = store.labeled(model="m", since=1005.0, after=labeled_cursor(first))
    assert [p.result_id for p in rest] == ["p15", "p18", "p21", "p24", "p27"]
    assert [p.result_id for p in store.labeled(model="m", version=2, since=1005.0)] == ["p09", "p15", "p21", "p27"]
    every = [p.result_id for p in labeled_since(store, "m", 1005.0, page_rows=2)]  # what retraining reads
    assert every == ["p06", "p09", "p12", "p15", "p18", "p21", "p24", "p27"]
    assert [p.result_id for p in labeled_since(store, "m", 1005.0, until=1013.0, version=1)] == ["p06", "p12"]


def test_an_archived_result_is_refused_with_the_reason_and_its_label_outlives_the_move(tmp_path: Path) -> None:
    store = RetainedResultStore(
        tmp_path / "results.sqlite", LocalStorage(tmp_path / "artifacts"), RetentionPolicy(max_rows_per_model=1)
    )
    old, labeled, new = new_result_id(), new_result_id(), new_result_id()
    assert abs(result_time(old) - time.time()) < 60 and result_time("r1") is None
    at = time.time()
    store.record_batch([record(old, at=at - 2), record(labeled, at=at - 1), record(new, at=at)])
    store.label([LabelRequest("dog", id=labeled)], ALLOWED, "api")
    assert store.retain() == 2
    with pytest.raises(Conflict, match="archived by retention"):
        store.label([LabelRequest("dog", id=old)], ALLOWED, "api")
    with pytest.raises(NotFound):
        store.label([LabelRequest("dog", id=new_result_id())], ALLOWED, "api")
    assert [(q.labeled, q.correct) for q in store.quality(model="m")] == [(1, 0)]
    assert [p.result_id for p in store.labeled(model="m")] == [labeled]
    store.close()


def test_batches_parse_from_json_and_csv_naming_the_first_bad_row() -> None:
    rows = parse_label_rows([{"id": "r1", "label": "cat"}, {"client_request_id": "c", "index": "1", "label": 3}])
    assert rows[1] == LabelRequest("3", client_request_id="c", index=1, row=2)
    csv_rows = parse_label_csv(b"\xef\xbb\xbfresult_id,label\nr1,cat\nr2, dog \n")
    assert [(r.id, r.label, r.row) for r in csv_rows] == [("r1", "cat", 1), ("r2", "dog", 2)]
    for bad, message in (
        ({"label": "cat"}, "row 2: give exactly one of"),
        ({"id": "r", "request_id": "q", "label": "cat"}, "row 2: give exactly one of"),
        ({"id": "r"}, "row 2: label must be"),
        ({"id": "r", "label": "cat", "colour": 1}, r"row 2: unknown keys \['colour'\]"),
        ({"request_id": "r", "index": -1, "label": "cat"}, "row 2: index must be"),
        ({"id": "r", "index": 0, "label": "cat"}, "row 2: index goes with"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            parse_label_rows([{"id": "ok", "label": "cat"}, bad])
    with pytest.raises(InvalidArgument, match="a JSON list"):
        parse_label_rows({"id": "r1", "label": "cat"})
    with pytest.raises(InvalidArgument, match="needs a header"):
        parse_label_csv(b"r1,cat\n")
    with pytest.raises(InvalidArgument, match="row 1: label must be"):
        parse_label_csv(b"id,label\nr1,\n")
