"""What a batch inference job is asked to do: which model, over which input, and what to keep."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiplatform.errors import InvalidArgument
from aiplatform.registry.refs import parse_model_ref

MAX_WORKERS = 64
"""Model actors one job may hold at once."""


class BatchInputSpec(BaseModel):
    """Exactly one of: a dataset version's split, an uploaded input (its id), or a ``uri`` (an
    ``s3://`` file or folder of images, or an ``http(s)://`` file) the source policy allows."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, min_length=1, max_length=200, description="a dataset name")
    dataset_version: str | None = Field(None, min_length=1, max_length=200, description="latest when unset")
    split: Literal["train", "val", "test"] = "test"
    upload: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="an uploaded input's id")
    uri: str | None = Field(None, min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _exactly_one(self) -> BatchInputSpec:
        given = [name for name in ("dataset", "upload", "uri") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"name exactly one of dataset, upload or uri (got {given or 'none'})")
        if self.dataset is None and self.dataset_version is not None:
            raise ValueError("dataset_version goes with dataset")
        return self

    def describe(self) -> str:
        """The input as people name it: ``mnist@3a9f:test``, ``upload 5e1c…``, the URI."""
        if self.dataset is not None:
            return f"{self.dataset}@{self.dataset_version or 'latest'}:{self.split}"
        if self.upload is not None:
            return f"upload {self.upload[:12]}"
        return str(self.uri)


class BatchParams(BaseModel):
    """The parameters of a ``batch-inference`` task."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=300, description="NAME, NAME@VERSION or NAME@ALIAS")
    input: BatchInputSpec
    write_results: bool = Field(False, description="also write each prediction to the result store")
    evaluate: bool = Field(True, description="accuracy, macro-F1 and the confusion matrix when the input has labels")
    batch_size: int | None = Field(None, ge=1, le=65536, description="rows per forward pass; chosen for the model")
    max_rows: int | None = Field(None, ge=1, description="score only the first rows of the input")
    part_rows: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="input rows per output part (what a resumed job skips); chosen when unset",
    )
    workers: int = Field(1, ge=1, le=MAX_WORKERS, description="model actors (each loads the package once)")
    gpu: Literal["auto", "on", "off"] = Field("auto", description="auto: a GPU per actor when the cluster has them")

    @model_validator(mode="after")
    def _model_ref(self) -> BatchParams:
        try:
            parse_model_ref(self.model)
        except InvalidArgument as exc:  # a pydantic error, so it is named with the other problems
            raise ValueError(exc.message) from None
        return self

    @property
    def model_name(self) -> str:
        return parse_model_ref(self.model)[0]

    @property
    def model_ref(self) -> str:
        """The version or alias (``latest`` for a bare name)."""
        return parse_model_ref(self.model)[1]
