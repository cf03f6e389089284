"""`aip up` / `aip models ...` / `aip predict` / `aip down`, as a user runs them in a shell."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import tritonclient.grpc as oip_grpc

from aiplatform.code_archives import pack_directory
from aiplatform.storage import sha256_bytes
from tests.factories import fault_table_figure, free_port, make_digit_images, png_bytes

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listening_elsewhere() -> set[tuple[str, int]]:
    """Listening TCP sockets not bound to loopback."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.ip not in LOOPBACK
    }


def show(aip, task_id: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    shown = aip("tasks", "show", task_id)
    assert shown.returncode == 0, shown.stderr[-2000:]
    return json.loads(shown.stdout)


def _prometheus_started(up_output: str, port: int, dashboard_port: int, home: Path) -> int | None:
    """The pid of the Prometheus `aip up` started (None where none is installed, and `up` said so)."""
    if shutil.which("prometheus") is None and not os.environ.get("CI"):
        assert "not installed" in up_output and "apt-get install prometheus" in up_output
        return None
    assert f"http://127.0.0.1:{port}" in up_output
    assert {
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    } <= LOOPBACK
    assert (home / "state" / "prometheus" / "data").is_dir()  # its data under the platform's state
    ray_token = (home / "token").read_text().strip()
    health = httpx.get(
        f"http://127.0.0.1:{dashboard_port}/api/prometheus_health",
        timeout=30,
        headers={"Authorization": f"Bearer {ray_token}"},
    )
    assert health.status_code == 200, health.text
    return int((home / "state" / "prometheus" / "prometheus.pid").read_text())


def test_aip_up_serves_models_on_loopback_only_and_down_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIP_", "RAY_ADDRESS"))}
    http_port, dashboard_port, grpc_port, prometheus_port = free_port(), free_port(), free_port(), free_port()
    env.update(
        {
            "AIP_HOME": str(tmp_path),
            "AIP_RAY_PORT": str(free_port()),
            "AIP_DASHBOARD_PORT": str(dashboard_port),
            "AIP_DASHBOARD_AGENT_PORT": str(free_port()),  # the session's Ray may hold Ray's default
            "AIP_HTTP_PORT": str(http_port),
            "AIP_GRPC_PORT": str(grpc_port),
            "AIP_RAY_NUM_CPUS": "2",
            "AIP_PROMETHEUS_PORT": str(prometheus_port),
            "AIP_RAY_TEMP_DIR": f"/tmp/aip-up-{os.getpid()}",
            "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )

    def aip(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aip", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    before = _listening_elsewhere()
    up = aip("up")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert f"http://127.0.0.1:{http_port}" in up.stdout
        assert (tmp_path / "token").stat().st_mode & 0o077 == 0
        # Secure by default: an API token made for this platform (0600), and a login URL for the UI.
        api_token_file = tmp_path / "state" / "api_token"
        assert api_token_file.stat().st_mode & 0o077 == 0
        api_token = api_token_file.read_text()
        assert f"http://127.0.0.1:{http_port}/#token={api_token}" in up.stdout
        assert httpx.get(f"http://127.0.0.1:{http_port}/v1/models", timeout=30).status_code == 401
        assert _listening_elsewhere() <= before, _listening_elsewhere() - before
        # The Open Inference Protocol over gRPC too, on loopback (Serve would bind every interface).
        assert f"127.0.0.1:{grpc_port}" in up.stdout
        assert {
            c.laddr.ip
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == grpc_port
        } <= LOOPBACK
        assert oip_grpc.InferenceServerClient(url=f"127.0.0.1:{grpc_port}").is_server_live()
        # Prometheus beside the head (Debian's package is installed here), on loopback, and the
        # Ray dashboard's metrics views pointed at it.
        prometheus_pid = _prometheus_started(up.stdout, prometheus_port, dashboard_port, tmp_path)

        # Register two versions as a training job would (a driver joining with the token).
        register = textwrap.dedent("""
            from aip.local import LOCAL_RAY_ENV
            import os; os.environ.update(LOCAL_RAY_ENV)
            from aip.local import connect_driver
            from aiplatform.registry import RegistryClient
            from aiplatform.settings import Settings
            from tests.factories import register_package
            settings = Settings(); connect_driver(settings)
            for seed, acc in ((1, 0.90), (2, 0.91)):
                register_package(settings, "tiny", seed=seed, metrics={"test_accuracy": acc})
            RegistryClient.connect(settings).set_alias("tiny", "production", 1)
        """)
        done = subprocess.run(
            [sys.executable, "-c", register], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]

        listed = aip("models", "list", "--json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        rows = json.loads(listed.stdout)
        assert sorted((r["version"], r["aliases"]) for r in rows) == [(1, ["production"]), (2, [])]

        promoted = aip("models", "promote", "tiny", "2")
        assert promoted.returncode == 0 and "production -> version 2" in promoted.stdout, promoted.stderr
        image = tmp_path / "digit.png"
        image.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)))
        predicted = aip("predict", str(image), "--model", "tiny", "--json")
        assert predicted.returncode == 0, predicted.stderr[-2000:]
        assert json.loads(predicted.stdout)["version"] == 2
        request_id = json.loads(predicted.stdout)["request_id"]
        # Past predictions and a model's versions from the terminal (results reach the store in batches).
        deadline = time.time() + 30
        while time.time() < deadline and aip("results", "show", request_id).returncode != 0:
            time.sleep(0.5)
        shown = aip("results", "show", request_id)
        assert shown.returncode == 0 and f"result {request_id}: tiny v2" in shown.stdout, shown.stderr[-2000:]
        page = json.loads(aip("results", "list", "--model", "tiny", "--since", "1h", "--json").stdout)
        assert [r["id"] for r in page["results"]] == [request_id]
        assert request_id in aip("results", "list").stdout
        listed_versions = aip("models", "show", "tiny")
        assert "v2" in listed_versions.stdout and "test_accuracy 0.9100" in listed_versions.stdout, (
            listed_versions.stderr
        )
        production = json.loads(aip("models", "show", "tiny@production", "--json").stdout)
        assert production["version"] == 2 and production["metrics"]["test_accuracy"] == 0.91
        assert [step["version"] for step in production["lineage_chain"]] == [2]

        canary = aip("models", "canary", "tiny", "1", "--weight", "25")
        assert canary.returncode == 0 and "v1 25%, v2 75%" in canary.stdout, canary.stderr
        assert "no canary" in aip("models", "canary", "tiny", "--clear").stdout
        back = aip("models", "rollback", "tiny")
        assert back.returncode == 0 and "production -> version 1" in back.stdout, back.stderr

        for args, message in [
            (("predict", str(tmp_path / "missing.png"), "--model", "tiny"), "not a readable file"),
            (("predict", str(image), "--model", "nope"), "not found"),
            (("models", "promote", "tiny", "9"), "not found"),
            (("models", "canary", "tiny", "2", "--weight", "150"), "between 0 and 100"),
            (("models", "show", "tiny@staging"), "no version 'staging' and no alias 'staging'"),
            (("results", "show", "no-such-result"), "not found"),
            (("results", "list", "--since", "last week"), "give an age such as 30m"),
        ]:
            failed = aip(*args)
            assert failed.returncode == 2 and message in failed.stderr, (args, failed.stderr[-1000:])

        # Training from the terminal: submit and watch, list, logs; then predict with the new model.
        submitted = aip(
            "tasks",
            "submit",
            "cnn-classification",
            "--param",
            "epochs=2",
            "--param",
            "max_rows=3000",
            "--param",
            "conv_channels=[8,16]",
            "--param",
            "hidden_units=32",
            "--model-name",
            "cli-cnn",
            "--watch",
            timeout=400,
        )
        assert submitted.returncode == 0, (submitted.stdout[-2000:], submitted.stderr[-2000:])
        assert "epoch 2/2" in submitted.stdout and "SUCCEEDED: model cli-cnn version 1" in submitted.stdout
        task_id = re.search(r"task (\w+) QUEUED", submitted.stdout).group(1)  # type: ignore[union-attr]
        tasks = json.loads(aip("tasks", "list", "--json").stdout)["tasks"]
        assert [(t["id"], t["state"]) for t in tasks if t["id"] == task_id] == [(task_id, "SUCCEEDED")]
        assert f"task {task_id}" in aip("tasks", "logs", task_id).stdout
        images, labels = make_digit_images(1, seed=0)
        digit = tmp_path / "real-digit.png"
        digit.write_bytes(png_bytes(images[0]))
        answer = aip("predict", str(digit), "--model", "cli-cnn", "--version", "1", "--json")
        assert json.loads(answer.stdout)["label"] == str(int(labels[0])), answer.stderr[-2000:]
        trained = aip("models", "show", "cli-cnn@1")  # where it errs: per class, the matrix, the worst mistakes
        assert "confusion matrix (rows: true class" in trained.stdout and "most confidently wrong" in trained.stdout
        evaluation = json.loads(aip("models", "show", "cli-cnn@1", "--json").stdout)["metrics"]["test_evaluation"]
        assert sum(map(sum, evaluation["confusion_matrix"])) == sum(c["support"] for c in evaluation["per_class"]) > 0

        # Your own code from the terminal: the example project zipped, uploaded once by its digest and
        # made a task (test_user_code.py trains that same project through the API).
        custom = aip(
            "tasks",
            "submit",
            "--entry",
            "digits_mlp.train:train_loop",
            "--working-dir",
            "examples/digits-mlp",
            "--dataset",
            "mnist",
            "--max-rows",
            "600",
            "--param",
            "epochs=1",
            "--param",
            "hidden=16",
            "--no-start",
            "--json",
        )
        assert custom.returncode == 0, (custom.stdout[-2000:], custom.stderr[-2000:])
        created = json.loads(custom.stdout)
        digest = sha256_bytes(pack_directory(ROOT / "examples" / "digits-mlp"))
        assert f"code {digest}" in custom.stderr and created["state"] == "CREATED"
        assert created["params"]["code"] == digest and created["params"]["config"] == {"epochs": 1, "hidden": 16}

        # `ray job submit --working-dir DIR` with the token, as in the README: the project's code
        # travels with the job, the run records itself as a task and keeps that folder by digest.
        # Without the token, or with another, the head refuses. The job carries a platform key
        # (here the bootstrap token: the platform admin, acting in default) or registers nothing.
        ray_bin = str(Path(sys.executable).parent / "ray")
        job = subprocess.run(
            [
                ray_bin,
                "job",
                "submit",
                "--address",
                f"http://127.0.0.1:{dashboard_port}",
                "--working-dir",
                str(ROOT / "examples" / "digits-mlp"),
                "--submission-id",
                "direct-run-1",
                "--runtime-env-json",
                json.dumps({"env_vars": {"AIP_API_TOKEN": api_token}}),
                "--",
                "python",
                "-m",
                "jobs.train",
                "--entry",
                "digits_mlp.train:train_loop",
                "--dataset",
                "mnist",
                "--max-rows",
                "600",
                "--param",
                "epochs=1",
                "--param",
                "hidden=16",
                "--model-name",
                "direct-mlp",
            ],
            cwd=ROOT,
            env={**env, "RAY_AUTH_MODE": "token"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert job.returncode == 0, (job.stdout[-2000:], job.stderr[-2000:])
        assert "Registered model direct-mlp version 1" in job.stdout and "succeeded" in job.stdout + job.stderr
        no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        for bad_env in (no_token, {**no_token, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}):
            refused = subprocess.run(
                [ray_bin, "job", "list", "--address", f"http://127.0.0.1:{dashboard_port}"],
                env=bad_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert refused.returncode != 0 and "AuthenticationError" in refused.stderr, refused.stderr[-1000:]
        direct = [
            t for t in json.loads(aip("tasks", "list", "--json").stdout)["tasks"] if t["ray_job_id"] == "direct-run-1"
        ]
        assert [(t["source"], t["template"], t["state"], t["result"]["model"]) for t in direct] == [
            ("ray-job", "user-code", "SUCCEEDED", "direct-mlp")
        ]
        # The uploaded folder is the example: the same files, so the same digest as packing it here.
        assert direct[0]["params"]["code"] == digest == direct[0]["result"]["code_digest"]

        for args, message in [
            (("tasks", "submit", "nope"), "Training template 'nope' not found"),
            (("tasks", "submit", "cnn-classification", "--param", "epochs=0"), "epochs: Input should be greater"),
            (("tasks", "cancel", task_id), "already SUCCEEDED"),
            (
                ("tasks", "submit", "--entry", "pkg.train:fn", "--working-dir", str(tmp_path / "nope")),
                "is not a folder",
            ),
            (
                ("tasks", "submit", "cnn-classification", "--entry", "pkg.train:fn"),
                "a template (e.g. cnn-classification) or --entry",
            ),
            (("tasks", "watch", "missing"), "Task 'missing' not found"),
        ]:
            failed = aip(*args)
            assert failed.returncode == 2 and message in failed.stderr, (args, failed.stderr[-1000:])

        # A task running when the platform stops is marked interrupted after the next `aip up`.
        running = json.loads(
            aip(
                "tasks", "submit", "cnn-classification", "--param", "epochs=200", "--param", "max_rows=3000", "--json"
            ).stdout
        )
        # A Ray job's start and the scheduler's round: the wait wait_for_task gives a task (it ends
        # as soon as the task runs), not a figure from a faster machine.
        deadline = time.time() + 240
        while time.time() < deadline and show(aip, running["id"])["state"] != "RUNNING":
            time.sleep(0.5)
        assert show(aip, running["id"])["state"] == "RUNNING"
        # ... and an alert is open (a drift score reported to the alert engine)
        raise_alert = textwrap.dedent("""
            from aip.local import LOCAL_RAY_ENV
            import os; os.environ.update(LOCAL_RAY_ENV)
            from aip.local import connect_driver
            from aiplatform.alerting.actor import AlertClient
            from aiplatform.settings import Settings
            settings = Settings(); connect_driver(settings)
            alerts = AlertClient.connect(settings)
            alerts.record_drift("tiny", {"mean_intensity": 0.9})
            print([a["id"] for a in alerts.evaluate_now()["fired"] if a["rule"] == "drift-significant"][0])
        """)
        raised = subprocess.run(
            [sys.executable, "-c", raise_alert], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert raised.returncode == 0, raised.stderr[-3000:]
        alert_id = raised.stdout.strip().splitlines()[-1]
        assert aip("down").returncode == 0
        again = aip("up")
        assert again.returncode == 0, again.stderr[-3000:]
        deadline = time.time() + 120  # the restarted scheduler's first rounds, on a slower machine too
        while time.time() < deadline and show(aip, running["id"])["state"] == "RUNNING":
            time.sleep(1)
        interrupted = show(aip, running["id"])
        assert (interrupted["state"], interrupted["error_reason"]) == ("FAILED", "interrupted"), interrupted
        # what was stored before the restart is all there
        assert json.loads(aip("tasks", "list", "--json").stdout)["counts"]["SUCCEEDED"] == 2  # cli-cnn and direct-mlp
        models = json.loads(aip("models", "list", "--json").stdout)
        assert {r["model"] for r in models} >= {"tiny", "cli-cnn", "direct-mlp"}
        assert [r["version"] for r in models if r["model"] == "tiny" and "production" in r["aliases"]] == [1]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{http_port}", timeout=30, headers={"Authorization": f"Bearer {api_token}"}
        ) as api:
            kept = api.get(f"/v1/results/{request_id}")
            assert kept.status_code == 200 and kept.json()["version"] == 2, kept.text
            assert alert_id in {
                a["id"] for a in api.get("/v1/alerts", params={"rule": "drift-significant"}).json()["alerts"]
            }
        fault_table_figure(
            "restart",
            f"aip down/up with a task running: the task FAILED (interrupted); {len(models)} "
            "model versions, the production alias, the prediction result and the alert kept",
        )
    finally:
        down = aip("down")
    assert down.returncode == 0 and "platform stopped" in down.stdout, down.stderr[-2000:]
    assert not (Path(env["AIP_RAY_TEMP_DIR"]) / "ray_current_cluster").exists()
    if prometheus_pid is not None:  # gone with `down`, its port too
        assert not psutil.pid_exists(prometheus_pid) or psutil.Process(prometheus_pid).status() == psutil.STATUS_ZOMBIE
        assert not any(
            c.laddr.port == prometheus_port
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        )
    stopped = aip("models", "list", timeout=60)
    assert stopped.returncode == 2 and "aip up" in stopped.stderr
