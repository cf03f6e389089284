"""``aip monitoring provision`` against a recording Grafana stand-in on loopback: everything is
created once, a second run writes nothing, and Grafana's errors are clear."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aip.cli import main as aip
from aiplatform.errors import Conflict, InvalidArgument, Unavailable
from aiplatform.monitoring.dashboards import DASHBOARDS, DATASOURCE_UID, FOLDER_UID
from aiplatform.monitoring.grafana import GrafanaProvisioner, alert_rules
from tests.factories import free_port
from tests.grafana_stub import GrafanaStub

pytestmark = pytest.mark.unit
TOKEN = "glsa_test_token"
RULES = alert_rules(latency_p99_s=0.5, error_rate=0.05, queue_wait_s=600, drift_psi=0.25)


@pytest.fixture(autouse=True)
def _ray_env_restored() -> Iterator[None]:
    """``aip`` sets Ray's local-mode variables (token auth on) in its process, as a CLI should;
    called in the test process, they would leak into every Ray started after this module."""
    from aip.local import LOCAL_RAY_ENV

    before = {key: os.environ.get(key) for key in LOCAL_RAY_ENV}
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def grafana() -> Iterator[tuple[GrafanaStub, str]]:
    stub = GrafanaStub(TOKEN)
    url = stub.start(free_port())
    try:
        yield stub, url
    finally:
        stub.stop()


def test_provisioning_creates_everything_once_and_a_second_run_changes_nothing(
    grafana: tuple[GrafanaStub, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stub, url = grafana
    args = [
        "monitoring",
        "provision",
        "--grafana-url",
        url,
        "--token",
        TOKEN,
        "--prometheus-url",
        "http://127.0.0.1:9090",
    ]
    assert aip(args) == 0
    assert "Grafana is up to date (changed)" in capsys.readouterr().out
    assert set(stub.datasources) == {DATASOURCE_UID} and stub.datasources[DATASOURCE_UID]["type"] == "prometheus"
    assert set(stub.folders) == {FOLDER_UID}
    assert set(stub.dashboards) == set(DASHBOARDS)
    assert all(d["meta"]["folderUid"] == FOLDER_UID for d in stub.dashboards.values())
    assert set(stub.rules) == {r["uid"] for r in RULES}
    first_writes = len(stub.writes)
    assert first_writes == 1 + 1 + len(DASHBOARDS) + len(RULES)

    stub.requests.clear()
    assert aip(args) == 0
    output = capsys.readouterr().out
    assert "(nothing to change)" in output and "created" not in output
    assert stub.writes == [] and stub.requests  # read everything, wrote nothing


def test_a_changed_object_is_updated_alone(grafana: tuple[GrafanaStub, str]) -> None:
    stub, url = grafana
    provisioner = GrafanaProvisioner.connect(url, TOKEN)
    provisioner.provision(prometheus_url="http://127.0.0.1:9090", rules=RULES)
    stub.dashboards["aiplatform-serving"]["dashboard"]["title"] = "edited by hand"
    stub.requests.clear()
    result = provisioner.provision(prometheus_url="http://127.0.0.1:9091", rules=RULES)
    assert sorted(result.updated) == ["dashboard aiplatform-serving", f"data source {DATASOURCE_UID}"]
    assert stub.datasources[DATASOURCE_UID]["url"] == "http://127.0.0.1:9091"
    assert stub.dashboards["aiplatform-serving"]["dashboard"]["title"] == DASHBOARDS["aiplatform-serving"][0]


def test_grafana_errors_are_clear(grafana: tuple[GrafanaStub, str], capsys: pytest.CaptureFixture[str]) -> None:
    stub, url = grafana
    with pytest.raises(InvalidArgument, match=r"refused the token \(HTTP 401\)"):
        GrafanaProvisioner.connect(url, "wrong").provision(prometheus_url="http://p:9090", rules=RULES)
    assert aip(["monitoring", "provision", "--grafana-url", url, "--token", "wrong"]) == 2
    assert "refused the token" in capsys.readouterr().err

    stub.datasources["other"] = {"uid": "other", "name": "AI Platform Prometheus", "type": "prometheus"}
    with pytest.raises(Conflict, match="conflicts with an existing object"):
        GrafanaProvisioner.connect(url, TOKEN).provision(prometheus_url="http://p:9090", rules=RULES)
    del stub.datasources["other"]

    stub.fail_next = [503, 502]  # two server errors, then it works: retried
    provisioner = GrafanaProvisioner(GrafanaProvisioner.connect(url, TOKEN).api, url, base_delay_s=0.01)
    assert provisioner.provision(prometheus_url="http://p:9090", rules=RULES).created
    stub.fail_next = [500] * 5
    with pytest.raises(Unavailable, match="failed .* 3 times"):
        provisioner.provision(prometheus_url="http://p:9090", rules=RULES)
    with pytest.raises(Unavailable, match="cannot be reached"):
        GrafanaProvisioner(
            GrafanaProvisioner.connect(f"http://127.0.0.1:{free_port()}", TOKEN).api, "x", base_delay_s=0.01
        ).provision(prometheus_url="http://p:9090", rules=RULES)
    with pytest.raises(InvalidArgument, match="must start with http"):
        GrafanaProvisioner.connect("grafana:3000", TOKEN)
