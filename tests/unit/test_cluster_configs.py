"""The cluster configs, checked with Ray's own validators: the cluster launcher's schema for
ray-cluster.yaml and Serve's deploy schema for the RayService's serve config; the KubeRay
manifests agree with each other and with serve_apps/config.yaml."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydantic
import pytest
import ray
import yaml

from aiplatform.runtime import SERVE_ENV
from aiplatform.serving.oip_grpc import SERVICER_FUNCTION

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def test_the_cluster_launcher_config_passes_rays_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load("ray-cluster.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and {"cpu_worker", "gpu_worker"} <= set(types)
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g4", "g5", "g6", "p3", "p4", "p5"))
    setup = " ".join(config["setup_commands"])
    assert "-c ~/aiplatform/constraints.txt" in setup and "URLLIB3_NO_OVERRIDE=1" in setup
    assert "AIP_STORAGE_URI=s3://" in setup
    assert all(
        "--metrics-export-port" in " ".join(cmds)
        for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"])
    )
    for name, node_type in types.items():  # IMDSv2 only: SSRF through a node cannot read its credentials
        assert node_type["node_config"]["MetadataOptions"]["HttpTokens"] == "required", name
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:  # token auth explicit wherever Ray starts (the dashboard is on 0.0.0.0)
            assert command.startswith("RAY_AUTH_MODE=token "), command
    assert "~/.ray/auth_token" in config["file_mounts"].values()
    broken = copy.deepcopy(config)
    broken["available_node_types"]["cpu_worker"]["max_workerz"] = 3  # Ray's validator is not a formality
    with pytest.raises(Exception, match="max_workerz"):
        validate_config(prepare_config(broken))


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def test_the_raycluster_has_head_cpu_and_gpu_groups_with_auth_metrics_and_state() -> None:
    cluster = _load("cluster/kuberay/raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__ and spec["enableInTreeAutoscaling"] is True
    assert spec["gcsFaultToleranceOptions"]["redisAddress"].startswith("redis://")
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1 and groups["gpu"]["minReplicas"] == 0
    for container in _containers(spec):
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert (
            "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"] and "secretKeyRef" in env["AIP_API_TOKEN"]["valueFrom"]
        )
        assert env["AIP_STORAGE_URI"]["value"].startswith("s3://")
        assert env["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"]["value"] == SERVE_ENV["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        assert group["rayStartParams"]["metrics-export-port"] == "8080"
    head = spec["headGroupSpec"]["template"]["spec"]
    state_dir = {e["name"]: e for e in head["containers"][0]["env"]}["AIP_STATE_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    assert "persistentVolumeClaim" in volumes[mounts[state_dir]]  # the SQLite state outlives the pod


def test_the_rayservice_runs_serve_apps_on_the_same_cluster() -> None:
    from ray.serve.schema import ServeDeploySchema

    service = _load("cluster/kuberay/rayservice.yaml")
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    assert service["spec"]["rayClusterConfig"] == _load("cluster/kuberay/raycluster.yaml")["spec"]
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    local = _load("serve_apps/config.yaml")
    # The differences a real network needs (see the manifest's header), nothing else.
    expected = copy.deepcopy(local)
    expected["proxy_location"] = "EveryNode"  # ingress on the worker nodes while the head is lost
    expected["http_options"]["host"] = "0.0.0.0"
    expected["grpc_options"] = {"port": 9000, "request_timeout_s": 120, "grpc_servicer_functions": [SERVICER_FUNCTION]}
    for app in expected["applications"]:
        env = app.get("runtime_env", {}).get("env_vars", {})
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        if not env:
            app.pop("runtime_env", None)
    assert serve_config == expected
    with pytest.raises(pydantic.ValidationError):
        ServeDeploySchema.model_validate({**serve_config, "applications": [{"name": "x"}]})


def test_grpc_messages_are_bounded_like_http_bodies_everywhere_serve_runs() -> None:
    from aip.local import head_env
    from aiplatform.api.app import MAX_REQUEST_BYTES
    from aiplatform.limits import MAX_REQUEST_BYTES as MAX_GRPC_MESSAGE_BYTES
    from aiplatform.runtime import local_runtime_env

    assert MAX_GRPC_MESSAGE_BYTES == MAX_REQUEST_BYTES
    assert SERVE_ENV["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"] == str(MAX_REQUEST_BYTES)
    assert head_env()["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"] == SERVE_ENV["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"]
    first = local_runtime_env()
    first["env_vars"]["changed by ray.init"] = "1"
    assert "changed by ray.init" not in local_runtime_env()["env_vars"]
