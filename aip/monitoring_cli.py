"""``aip monitoring ...``: Prometheus and Grafana as code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from aiplatform.settings import Settings


def cmd_prometheus_config(args: argparse.Namespace, settings: Settings) -> None:
    from aiplatform.monitoring.prometheus import prometheus_yaml, service_discovery_path

    temp_dir = args.ray_temp_dir or settings.ray_temp_dir
    text = prometheus_yaml(service_discovery_path(Path(temp_dir) if temp_dir else None),
                           scrape_interval_s=args.scrape_interval, refresh_interval_s=args.refresh_interval)
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
    result = provisioner.provision(prometheus_url=args.prometheus_url, rules=alert_rules(
        latency_p99_s=settings.alert_latency_p99_s, error_rate=settings.alert_error_rate,
        queue_wait_s=settings.alert_queue_wait_s, drift_psi=settings.alert_drift_psi))
    for label, items in (("created", result.created), ("updated", result.updated), ("unchanged", result.unchanged)):
        for item in items:
            print(f"{label:<9} {item}")
    print("Grafana is up to date" + (" (changed)" if result.changed else " (nothing to change)"))


def add_monitoring_commands(commands: Any) -> None:
    monitoring = commands.add_parser("monitoring", help="Prometheus and Grafana as code").add_subparsers(
        dest="monitoring", required=True)
    prometheus = monitoring.add_parser("prometheus-config", help="a Prometheus config that discovers Ray's targets")
    prometheus.add_argument("--ray-temp-dir", help="Ray's temp dir (default: AIP_RAY_TEMP_DIR or /tmp/ray)")
    prometheus.add_argument("--scrape-interval", type=float, default=5.0, help="seconds")
    prometheus.add_argument("--refresh-interval", type=float, default=5.0, help="seconds between re-reads of "
                            "Ray's service-discovery file")
    prometheus.add_argument("--out", help="write here instead of stdout")
    prometheus.set_defaults(run=cmd_prometheus_config)
    dashboards = monitoring.add_parser("dashboards", help="write the Grafana dashboards' JSON models")
    dashboards.add_argument("--out", default="cluster/monitoring/dashboards")
    dashboards.set_defaults(run=cmd_dashboards)
    provision = monitoring.add_parser("provision", help="create or update the Prometheus data source, folder, "
                                      "dashboards and alert rules in a Grafana (idempotent)")
    provision.add_argument("--grafana-url", required=True, help="e.g. http://127.0.0.1:3000")
    provision.add_argument("--token", required=True, help="a Grafana service-account token (Editor or Admin)")
    provision.add_argument("--prometheus-url", default="http://127.0.0.1:9090",
                           help="where Grafana reaches the Prometheus that scrapes Ray")
    provision.set_defaults(run=cmd_provision)
