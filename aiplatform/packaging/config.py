"""``model.json`` as a typed, versioned object: what a package says about its model.

``format_version`` (written as ``format``, the key every package has carried since the first) says
which layout this is; packages written by earlier code (version 1, the only one so far) load as
they are. Unknown keys are kept, so a newer writer's additions survive a round trip.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aiplatform.errors import IntegrityError, InvalidArgument

MODEL_CONFIG_FORMAT = 1


class ModelConfig(BaseModel):
    """The model a package holds: its architecture, the inputs it takes, its labels and how raw
    inputs become tensors (``preprocessing``), and how its weights are stored (``compression``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    format_version: int = Field(MODEL_CONFIG_FORMAT, alias="format", ge=1, le=MODEL_CONFIG_FORMAT)
    name: str
    template: str
    task: str = "classification"
    architecture: dict[str, Any]
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    input: dict[str, Any] = Field(..., description="the kind of input ('type') and its shape or limits")
    labels: list[str] = Field(..., min_length=1)
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] = Field(default_factory=dict)
    compression: dict[str, Any] | None = None

    @field_validator("input")
    @classmethod
    def _input_has_a_type(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("type"), str):
            raise ValueError("needs a 'type' (the kind of input, e.g. 'image' or 'text')")
        return value

    @property
    def input_type(self) -> str:
        return str(self.input["type"])

    @classmethod
    def parse(cls, raw: Any, *, stored: bool = True) -> ModelConfig:
        """A ``model.json`` read from a package (``stored``: a bad one is an IntegrityError) or
        given by a caller (InvalidArgument)."""
        if isinstance(raw, ModelConfig):
            return raw
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'model.json'}: {e['msg']}" for e in exc.errors()
            )
            error = IntegrityError if stored else InvalidArgument
            raise error(f"model.json is not valid: {problems}") from None

    def to_json_dict(self) -> dict[str, Any]:
        """What ``model.json`` holds: what was read or given, nothing added (``format`` always)."""
        data = self.model_dump(by_alias=True, exclude_unset=True)
        data["format"] = self.format_version
        return data
