"""``aip monitoring ...``: a model's figures over time (``show``), Prometheus and Grafana as code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aip.api_client import PlatformAPI
from aiplatform.settings import Settings

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 40


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """The last ``width`` values as block characters scaled between their min and max."""
    values = values[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    return "".join(
        SPARKS[0 if span <= 0 else min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))] for v in values
    )


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "share":
        return f"{value * 100:.1f}%"
    return f"{value:.3g} {unit}"


def show_lines(overview: dict[str, Any]) -> list[str]:
    """What ``aip monitoring show`` prints: the totals, then per chart and series its latest value
    and a sparkline over the window."""
    version = f" v{overview['version']}" if overview.get("version") else ""
    totals = overview["totals"]
    lines = [
        f"{overview['model']}{version}, last {overview['window']} (from {overview['source']})",
        "requests: "
        + (", ".join(f"{outcome} {count:g}" for outcome, count in sorted(totals.items())) if totals else "none"),
    ]
    for chart in overview["charts"]:
        if not chart["available"]:
            lines.append(f"  {chart['title']:<40} needs Prometheus")
            continue
        if not chart["series"]:
            lines.append(f"  {chart['title']:<40} no data")
            continue
        for series in chart["series"]:
            labels = ",".join(f"{k}={v}" for k, v in series["labels"].items() if v)
            values = [v for _, v in series["points"]]
            name = chart["title"] + (f" [{labels}]" if labels else "")
            lines.append(
                f"  {name:<40} {_figure(values[-1] if values else None, chart['unit']):>12}  {sparkline(values)}"
            )
    quality = overview.get("quality")
    if quality is not None:
        hours = quality["window_s"] / 3600
        lines.append(f"live quality (labeled predictions of the last {hours:g} h):")
        if not quality["versions"]:
            lines.append("  none labeled (aip results label)")
        for q in quality["versions"]:
            lines.append(
                f"  v{q['version']:<4} accuracy {q['accuracy'] * 100:5.1f}%  macro-F1 {q['macro_f1']:.3f}  "
                f"over {q['labeled']} labeled"
            )
    for alert in overview["alerts"]:
        state = "firing" if alert["state"] == "firing" else "resolved"
        lines.append(f"alert {state}: {alert['severity']} {alert['rule']}: {alert['message']}")
    return lines


def cmd_show(args: argparse.Namespace, settings: Settings) -> None:
    params: dict[str, Any] = {"window": args.window}
    if args.version is not None:
        params["version"] = args.version
    overview = PlatformAPI(settings).get(f"/v1/monitoring/models/{quote(args.model, safe='')}", params=params)
    print(json.dumps(overview) if args.json else "\n".join(show_lines(overview)))


def cmd_prometheus_config(args: argparse.Namespace, settings: Settings) -> None:
    from aiplatform.monitoring.prometheus import prometheus_yaml, service_discovery_path

    temp_dir = args.ray_temp_dir or settings.ray_temp_dir
    text = prometheus_yaml(
        service_discovery_path(Path(temp_dir) if temp_dir else None),
        scrape_interval_s=args.scrape_interval,
        refresh_interval_s=args.refresh_interval,
    )
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")


def cmd_dashboards(args: argparse.Namespace, settings: Settings) -> None:
    from aiplatform.monitoring.dashboards import all_dashboards

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for uid, model in all_dashboards().items():
        (out / f"{uid}.json").write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out / f'{uid}.json'} ({len(model['panels'])} panels)")


def cmd_provision(args: argparse.Namespace, settings: Settings) -> None:
    from aiplatform.monitoring.grafana import GrafanaProvisioner, alert_rules

    provisioner = GrafanaProvisioner.connect(args.grafana_url, args.token)
    result = provisioner.provision(
        prometheus_url=args.prometheus_url,
        rules=alert_rules(
            latency_p99_s=settings.alert_latency_p99_s,
            error_rate=settings.alert_error_rate,
            queue_wait_s=settings.alert_queue_wait_s,
            drift_psi=settings.alert_drift_psi,
            quality_accuracy=settings.alert_quality_accuracy,
            quality_min_labeled=settings.alert_quality_min_labeled,
        ),
    )
    for label, items in (("created", result.created), ("updated", result.updated), ("unchanged", result.unchanged)):
        for item in items:
            print(f"{label:<9} {item}")
    print("Grafana is up to date" + (" (changed)" if result.changed else " (nothing to change)"))


def add_monitoring_commands(commands: Any) -> None:
    monitoring = commands.add_parser(
        "monitoring", help="a model's figures over time; Prometheus and Grafana as code"
    ).add_subparsers(dest="monitoring", required=True)
    show = monitoring.add_parser(
        "show",
        help="a model's request rate, errors, latency, batch sizes, classes, "
        "drift and live quality over a window: the latest values and a sparkline each",
    )
    show.add_argument("model")
    show.add_argument("--window", default="1h", help="15m, 1h, 6h, 24h or 7d")
    show.add_argument("--version", type=int, help="one version (default: every version)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=cmd_show)
    prometheus = monitoring.add_parser("prometheus-config", help="a Prometheus config that discovers Ray's targets")
    prometheus.add_argument("--ray-temp-dir", help="Ray's temp dir (default: AIP_RAY_TEMP_DIR or /tmp/ray)")
    prometheus.add_argument("--scrape-interval", type=float, default=5.0, help="seconds")
    prometheus.add_argument(
        "--refresh-interval", type=float, default=5.0, help="seconds between re-reads of Ray's service-discovery file"
    )
    prometheus.add_argument("--out", help="write here instead of stdout")
    prometheus.set_defaults(run=cmd_prometheus_config)
    dashboards = monitoring.add_parser("dashboards", help="write the Grafana dashboards' JSON models")
    dashboards.add_argument("--out", default="cluster/monitoring/dashboards")
    dashboards.set_defaults(run=cmd_dashboards)
    provision = monitoring.add_parser(
        "provision",
        help="create or update the Prometheus data source, folder, "
        "dashboards and alert rules in a Grafana (idempotent)",
    )
    provision.add_argument("--grafana-url", required=True, help="e.g. http://127.0.0.1:3000")
    provision.add_argument("--token", required=True, help="a Grafana service-account token (Editor or Admin)")
    provision.add_argument(
        "--prometheus-url",
        default="http://127.0.0.1:9090",
        help="where Grafana reaches the Prometheus that scrapes Ray",
    )
    provision.set_defaults(run=cmd_provision)
