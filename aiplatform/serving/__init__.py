"""Serving logic (the Ray Serve wrappers live in serve_apps/): inputs, model runner, router."""
