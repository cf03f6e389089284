"""The two kinds of response body: a fixed shape, and a store's record that may grow."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

Number = int | float
"""A number sent as it was made: an ``int`` stays ``1``, where ``float`` would send ``1.0``."""


class Body(BaseModel):
    """A body the route builds itself: exactly its declared fields."""


class Record(BaseModel):
    """A record as a store gives it (``to_dict()``): the fields declared here, and any other the
    store adds, passed on as they are."""

    model_config = ConfigDict(extra="allow")
