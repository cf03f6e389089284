from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_library_never_imports_entrypoints_or_serve_apps() -> None:
    offenders = []
    for path in (ROOT / "aiplatform").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("jobs", "serve_apps")]
    assert offenders == []


def test_serve_config_is_valid_for_serve_deploy() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_apps" / "config.yaml").read_text()))
    app = config.applications[0]
    assert app.import_path == "serve_apps.app:app"
    assert config.http_options.host == "127.0.0.1"


def test_the_real_urllib3_is_installed_beside_urllib3_future() -> None:
    """grafana-client's niquests needs urllib3-future, whose wheel replaces urllib3 itself (which
    botocore, requests and Ray use); scripts/install.sh installs it beside it instead."""
    from importlib import metadata

    import urllib3

    assert urllib3.__version__ == metadata.version("urllib3")
    assert not any(p.name == "urllib3_future.pth" for p in metadata.distribution("urllib3-future").files or [])


def test_the_cli_does_not_import_ray_before_it_sets_rays_local_only_environment() -> None:
    """Ray reads its environment at import: `aip` sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 first,
    so importing the CLI must not import Ray (a heavy import chain once broke `aip up`)."""
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", "import aip.cli, sys; print('ray' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.stdout.strip() == "False", probe.stderr[-2000:]
