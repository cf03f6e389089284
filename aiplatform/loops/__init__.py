"""Retraining loops: per-model policies whose triggers start runs that build data, train, gate,
canary and promote (or roll back), durable in SQLite, driven by a head actor."""
