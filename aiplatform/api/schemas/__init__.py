"""What the API's routes answer: one pydantic model per response body, one module per route group
(``routes/tasks.py`` answers with ``schemas/tasks.py``'s models). The OpenAPI schema shows them,
so clients see every body's shape.

Bodies keep the keys they always had. A record read from a store (a task, a model version, an
alert) is a :class:`Record`: its fields are declared, and a key a newer store adds still reaches
clients (``extra="allow"``); open-ended parts (a task's parameters, a profile, a chart's
series) are typed ``dict[str, Any]`` fields. A key that only some answers carry has a default
and its route sets ``response_model_exclude_unset=True``, so it is left out where it was not given."""

from aiplatform.api.schemas.base import Body, Number, Record

__all__ = ["Body", "Number", "Record"]
