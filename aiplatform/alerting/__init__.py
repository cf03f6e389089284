"""Alerting: rules over the platform's metrics, an engine that opens and resolves alerts, and
the notifications (UI, API, webhooks) that tell people."""
