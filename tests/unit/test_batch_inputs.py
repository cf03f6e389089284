"""Batch inputs and outputs in local storage: formats by content, refusals, row ranges, the one-file
download of every part."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiplatform.batch.inputs import BatchInputs
from aiplatform.batch.outputs import OUTPUT_SCHEMA, BatchOutputs
from aiplatform.batch.params import BatchParams
from aiplatform.batch.scoring import csv_bytes
from aiplatform.errors import InvalidArgument, NotFound, TooLarge
from aiplatform.storage import LocalStorage

pytestmark = pytest.mark.unit


@pytest.fixture()
def inputs(tmp_path: Path) -> BatchInputs:
    return BatchInputs(LocalStorage(tmp_path))


def test_a_csv_is_kept_as_text_cells_and_read_by_row_range(inputs: BatchInputs) -> None:
    rows = "".join(f'{i},{i * 0.5},"a, b",yes\n' for i in range(10_000))
    found = inputs.save("t.csv", io.BytesIO(("x,y,z,label\n" + rows).encode()), max_bytes=1 << 24)
    assert (found.format, found.rows, found.has_labels, found.columns) == (
        "csv",
        10_000,
        True,
        ("id", "x", "y", "z", "label"),
    )
    again = inputs.save("other-name.csv", io.BytesIO(("x,y,z,label\n" + rows).encode()), max_bytes=1 << 24)
    assert again.id == found.id
    part = inputs.read_rows(found.id, 4095, 4099)
    assert part.column("x").to_pylist() == ["4095", "4096", "4097", "4098"]
    assert csv_bytes(part.slice(0, 1)).decode() == 'id,x,y,z,label\n4095,4095,2047.5,"a, b",yes\n'


def test_jsonl_and_zip_inputs(inputs: BatchInputs) -> None:
    texts = inputs.save(
        "t.jsonl", io.BytesIO(b'{"text": "a", "id": 7, "label": "pos"}\n\n{"text": "b"}\n'), max_bytes=1024
    )
    assert (texts.format, texts.rows) == ("jsonl", 2)
    assert inputs.read_rows(texts.id, 0, 2).column("id").to_pylist() == ["7", "1"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat/1.png", b"x")
        archive.writestr("2.png", b"y")
        archive.writestr("__MACOSX/cat/._1.png", b"z")
    found = inputs.save("images.zip", io.BytesIO(buffer.getvalue()), max_bytes=1 << 20)
    table = inputs.read_rows(found.id, 0, 2)
    assert table.column("id").to_pylist() == ["cat/1.png", "2.png"]
    assert table.column("label").to_pylist() == ["cat", None]


@pytest.mark.parametrize(
    ("name", "data", "error", "fragment"),
    [
        ("e.csv", b"", InvalidArgument, "is empty"),
        ("big.csv", b"a\n" + b"1\n" * 600, TooLarge, "over the limit"),
        ("h.csv", b"a,b\n", InvalidArgument, "no rows"),
        ("bad.jsonl", b'{"text": "a"}\n{"txt": 1}\n', InvalidArgument, "line 2"),
        ("x.bin", b"\x00\x01\x02", InvalidArgument, "in no format"),
        ("z.zip", b"PK\x05\x06" + b"\x00" * 18, InvalidArgument, "ZIP"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_kept(
    inputs: BatchInputs, name: str, data: bytes, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        inputs.save(name, io.BytesIO(data), max_bytes=1000)
    assert inputs.storage.list("batch-inputs") == []
    with pytest.raises(NotFound):
        inputs.get("0" * 64)


def test_the_download_is_one_parquet_of_every_part_in_order(tmp_path: Path) -> None:
    outputs = BatchOutputs(LocalStorage(tmp_path))
    with pytest.raises(NotFound):
        outputs.write_download("t1", io.BytesIO())
    for index in (1, 0):
        rows = [
            {
                "id": f"{index}-{i}",
                "label": "a",
                "probability": 0.5,
                "probabilities": [0.5, 0.5],
                "model_version": 3,
                "true_label": None,
            }
            for i in range(3)
        ]
        outputs.write_part("t1", index, pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA))
    sink = io.BytesIO()
    assert outputs.write_download("t1", sink) == 6
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.column("id").to_pylist()[:4] == ["0-0", "0-1", "0-2", "1-0"]
    assert outputs.part_indices("t1") == {0, 1}


def test_params_name_exactly_one_input() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        BatchParams.model_validate({"model": "m", "input": {"dataset": "d", "upload": "0" * 64}})
    with pytest.raises(ValueError, match="NAME@VERSION"):
        BatchParams.model_validate({"model": "m@", "input": {"dataset": "d"}})
    assert BatchParams.model_validate({"model": "m@prod", "input": {"dataset": "d"}}).model_ref == "prod"


def test_the_output_cap_counts_the_rows_a_job_would_score() -> None:
    from aiplatform.batch.checks import check_output_size

    params = BatchParams.model_validate({"model": "digits", "input": {"dataset": "mnist"}})
    assert check_output_size(params, 1000, 1000) == 1000
    with pytest.raises(TooLarge, match=r"would score 1001 rows; the most one job may write is 1000 \(AIP_BATCH_MAX"):
        check_output_size(params, 1001, 1000)
    limited = params.model_copy(update={"max_rows": 10})
    assert check_output_size(limited, 10**9, 1000) == 10
