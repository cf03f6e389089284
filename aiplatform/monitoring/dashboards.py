"""Grafana dashboards as code, built with Grafana's own SDK (``grafana-foundation-sdk``).

Three dashboards: serving (traffic, errors, latency, batches, model cache, queueing), training
and queue (depth, waits, durations, throughput) and data and drift (PSI per feature, predicted
classes, live quality of labeled predictions, result-store lag, alerts). Every query names only metrics in
``aiplatform.monitoring.metrics.METRICS``; ``referenced_metrics`` lets a test check it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiplatform.monitoring.metrics import METRICS, PROMETHEUS_PREFIX

DATASOURCE_UID = "aiplatform-prometheus"
FOLDER_UID = "aiplatform"
FOLDER_TITLE = "AI Platform"
_METRIC_TOKEN = re.compile(r"\b(" + PROMETHEUS_PREFIX + r"aip_[a-z0-9_]+?)(?:_bucket|_sum|_count)?\b")


@dataclass(frozen=True)
class PanelSpec:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or stat
    description: str = ""


def _p(name: str, suffix: str = "") -> str:
    return METRICS[name].prometheus_name + suffix


SERVING = (
    PanelSpec(
        "Requests per second by model, version and outcome",
        ((f"sum by (model, version, outcome) (rate({_p('aip_requests')}[1m]))", "{{model}} v{{version}} {{outcome}}"),),
        "reqps",
    ),
    PanelSpec(
        "Error rate (server errors and rejections) by model",
        (
            (
                f'sum by (model) (rate({_p("aip_requests")}{{outcome=~"server_error|rejected"}}[5m])) / '
                f"clamp_min(sum by (model) (rate({_p('aip_requests')}[5m])), 1e-9)",
                "{{model}}",
            ),
        ),
        "percentunit",
    ),
    PanelSpec(
        "Latency p50 / p99 by model and version",
        (
            (
                f"histogram_quantile(0.5, sum by (le, model, version) (rate({_p('aip_request_latency_seconds', '_bucket')}[5m])))",
                "p50 {{model}} v{{version}}",
            ),
            (
                f"histogram_quantile(0.99, sum by (le, model, version) (rate({_p('aip_request_latency_seconds', '_bucket')}[5m])))",
                "p99 {{model}} v{{version}}",
            ),
        ),
        "s",
    ),
    PanelSpec(
        "Mean batch size on the model servers",
        (
            (
                f"sum by (model) (rate({_p('aip_batch_size', '_sum')}[5m])) / "
                f"clamp_min(sum by (model) (rate({_p('aip_batch_size', '_count')}[5m])), 1e-9)",
                "{{model}}",
            ),
        ),
    ),
    PanelSpec("Model cache events", ((f"sum by (event) (rate({_p('aip_model_cache')}[5m]))", "{{event}}"),), "ops"),
    PanelSpec(
        "Model load time p90",
        (
            (
                f"histogram_quantile(0.9, sum by (le, model) (rate({_p('aip_model_load_seconds', '_bucket')}[15m])))",
                "{{model}}",
            ),
        ),
        "s",
    ),
    PanelSpec("Queued requests in the gateways", ((f"sum({_p('aip_queued_requests')})", "queued"),)),
    PanelSpec(
        "Rejected requests", ((f"sum by (where) (rate({_p('aip_rejected_requests')}[5m]))", "{{where}}"),), "reqps"
    ),
)

TRAINING = (
    PanelSpec("Tasks by state", ((f"sum by (state) ({_p('aip_task_queue_depth')})", "{{state}}"),)),
    PanelSpec("Waiting tasks", ((f'sum({_p("aip_task_queue_depth")}{{state="QUEUED"}})', "queued"),), kind="stat"),
    PanelSpec(
        "Queue wait p90 by template",
        (
            (
                f"histogram_quantile(0.9, sum by (le, template) (rate({_p('aip_task_wait_seconds', '_bucket')}[1h])))",
                "{{template}}",
            ),
        ),
        "s",
    ),
    PanelSpec(
        "Task duration p50 by template and outcome",
        (
            (
                f"histogram_quantile(0.5, sum by (le, template, outcome) (rate({_p('aip_task_duration_seconds', '_bucket')}[6h])))",
                "{{template}} {{outcome}}",
            ),
        ),
        "s",
    ),
    PanelSpec(
        "Finished tasks per hour by outcome",
        ((f"sum by (outcome) (increase({_p('aip_task_duration_seconds', '_count')}[1h]))", "{{outcome}}"),),
    ),
    PanelSpec(
        "Training samples per second",
        ((f"max by (template) ({_p('aip_training_samples_per_second')})", "{{template}}"),),
    ),
)

DATA = (
    PanelSpec(
        "Drift score (PSI) by model and feature",
        ((f"max by (model, feature) ({_p('aip_drift_score')})", "{{model}} {{feature}}"),),
        description="Below 0.1 stable, 0.1-0.25 moderate, above 0.25 significant",
    ),
    PanelSpec(
        "Predicted class share by model and version",
        (
            (
                f"sum by (model, version, label) (rate({_p('aip_predicted_class')}[15m])) / ignoring(label) "
                f"group_left sum by (model, version) (rate({_p('aip_predicted_class')}[15m]))",
                "{{model}} v{{version}} {{label}}",
            ),
        ),
        "percentunit",
    ),
    PanelSpec(
        "Result-store write lag p99",
        (
            (
                f"histogram_quantile(0.99, sum by (le) (rate({_p('aip_result_write_lag_seconds', '_bucket')}[5m])))",
                "p99",
            ),
        ),
        "s",
    ),
    PanelSpec(
        "Live quality: accuracy and macro-F1 of labeled predictions by model and version",
        (
            (f"max by (model, version) ({_p('aip_quality_accuracy')})", "accuracy {{model}} v{{version}}"),
            (f"max by (model, version) ({_p('aip_quality_macro_f1')})", "macro-F1 {{model}} v{{version}}"),
        ),
        "percentunit",
        description="Over the predictions made in the quality window (AIP_QUALITY_WINDOW_S) that have a label",
    ),
    PanelSpec(
        "Labeled predictions in the quality window",
        ((f"max by (model, version) ({_p('aip_labeled_predictions')})", "{{model}} v{{version}}"),),
    ),
    PanelSpec(
        "Alerts raised by rule and severity",
        ((f"sum by (rule, severity) (increase({_p('aip_alerts')}[1h]))", "{{rule}} {{severity}}"),),
    ),
)

DASHBOARDS = {
    "aiplatform-serving": ("AI Platform: serving", SERVING),
    "aiplatform-training": ("AI Platform: training and queue", TRAINING),
    "aiplatform-data": ("AI Platform: data and drift", DATA),
}


def build_dashboard(uid: str) -> dict[str, Any]:
    """One dashboard's JSON model, built with the SDK's builders."""
    from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    title, panels = DASHBOARDS[uid]
    source = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["aiplatform", "ray"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
    )
    for spec in panels:
        panel = (stat.Panel() if spec.kind == "stat" else timeseries.Panel()).title(spec.title).unit(spec.unit)
        panel = panel.datasource(source).height(8).span(12)
        if spec.description:
            panel = panel.description(spec.description)
        for index, (expr, legend) in enumerate(spec.exprs):
            panel = panel.with_target(
                prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + index)).datasource(source)
            )
        board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def all_dashboards() -> dict[str, dict[str, Any]]:
    return {uid: build_dashboard(uid) for uid in DASHBOARDS}


def referenced_metrics(model: dict[str, Any]) -> set[str]:
    """The platform metric names (as Prometheus has them, without histogram suffixes) that a
    dashboard's queries use."""
    names: set[str] = set()
    for panel in model.get("panels", []):
        for target in panel.get("targets", []):
            names.update(_METRIC_TOKEN.findall(str(target.get("expr", ""))))
    return names
