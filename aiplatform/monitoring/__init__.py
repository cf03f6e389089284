"""Monitoring: the platform's metrics, Prometheus and Grafana as code, and alerting."""
