"""An end-to-end machine-learning platform on Ray."""

__version__ = "0.1.0"
