"""Bodies of ``/v1/analysis``: reports whose parts depend on the data's kind, kept open."""

from __future__ import annotations

from pydantic import Field

from aiplatform.api.schemas.base import Record


class AnalysisReport(Record):
    """A dataset profile or a drift report, with a link to each of its charts."""

    chart_urls: dict[str, str] = Field(description="chart name -> its URL under /v1/analysis/charts/")
