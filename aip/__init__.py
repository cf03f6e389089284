"""The ``aip`` command: start and stop the local platform, manage models, predict."""
