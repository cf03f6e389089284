"""Data analysis: dataset profiles and drift between training data and live inputs."""
