"""The platform's one typed settings object, read from ``AIP_*`` environment variables.

Entrypoints build it once (``Settings()``) and pass values down; library code never reads
``os.environ`` itself. Defaults serve one machine: state and artifacts under ``~/.aiplatform``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RAY_NAMESPACE_DEFAULT = "aiplatform"
MIN_API_TOKEN_CHARS = 16
"""The shortest ``api_token`` accepted (after surrounding spaces are stripped): a blank or short
token is a mistake in the environment, never a password to guess against."""


class Settings(BaseSettings):
    """Platform configuration; every field maps to ``AIP_<FIELD>`` (e.g. ``AIP_STORAGE_URI``)."""

    # Errors name the setting and the problem, not the value: several values are secrets.
    model_config = SettingsConfigDict(env_prefix="AIP_", extra="ignore", frozen=True, hide_input_in_errors=True)

    home: Path = Field(default_factory=lambda: Path.home() / ".aiplatform")
    """Root for local state (SQLite) and, by default, artifacts."""

    storage_uri: str | None = None
    """Where artifacts live: a local path / ``file://`` URI or ``s3://bucket/prefix``.
    Default: ``<home>/artifacts``."""

    s3_endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, moto, ...); unset means AWS."""
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    state_dir: Path | None = None
    """SQLite files of the head-node actors. Default: ``<home>/state``."""

    ray_address: str | None = Field(default=None, validation_alias=AliasChoices("AIP_RAY_ADDRESS", "RAY_ADDRESS"))
    """Existing cluster to join; unset starts an embedded local Ray."""
    ray_namespace: str = RAY_NAMESPACE_DEFAULT
    ray_num_cpus: int | None = None
    """CPUs of the embedded local Ray (default: all cores)."""
    ray_temp_dir: Path | None = None
    ray_dashboard: bool = True

    ray_port: int = Field(6379, ge=1, le=65535)
    """GCS port of the head that ``aip up`` starts."""
    dashboard_port: int = Field(8265, ge=1, le=65535)
    dashboard_agent_port: int = Field(52365, ge=1, le=65535)
    """The head's dashboard agent (Ray's default port), which runs submitted jobs: a second Ray
    on the machine holding it leaves ``aip up`` unable to submit any ("No available agent")."""
    http_port: int = Field(8000, ge=1, le=65535)
    """Serve's HTTP proxy (gateway, REST API, UI) on 127.0.0.1 in the local platform."""
    grpc_port: int = Field(9000, ge=0, le=65535)
    """Serve's gRPC proxy (the Open Inference Protocol's ``inference.GRPCInferenceService``) on
    127.0.0.1 in the local platform; 0 turns the gRPC ingress off."""
    prometheus_port: int = Field(9090, ge=0, le=65535)
    """The Prometheus ``aip up`` starts on 127.0.0.1 when the ``prometheus`` binary is installed;
    0 starts none."""
    prometheus_url: str | None = None
    """The Prometheus that scrapes this platform's Ray (``aip up`` sets it to the one it starts):
    the Monitoring page and ``aip monitoring show`` read metrics over time from it. Unset: from
    the alert engine's own signal history."""
    api_url: str | None = None
    """Where CLI commands reach the gateway; default ``http://127.0.0.1:<http_port>``."""

    serve_app_name: str = "aiplatform"
    """Name of the platform's Serve application (gateway + model servers)."""

    serve_max_batch_size: int = Field(64, ge=1, le=4096)
    """Most inputs the gateway sends the model servers in one call (one forward pass)."""
    serve_batches_in_flight: int = Field(2, ge=1, le=64)
    """Concurrent calls per model from one gateway replica; further requests wait and join the
    next batch (no fixed wait: a lone request is sent at once)."""
    serve_batch_wait_s: float = Field(0.0, ge=0, le=1)
    """How long a model server waits to merge calls from several gateway replicas."""
    serve_gateway_replicas: int = Field(1, ge=1, le=64)
    """Gateway replicas. With Serve's direct ingress each has its own port behind a load balancer
    (HAProxy on a cluster); through Serve's proxy they share one."""
    serve_gateway_max_ongoing: int = Field(256, ge=1)
    serve_gateway_max_queued: int = Field(256, ge=1)
    """Requests a gateway replica holds beyond ``serve_gateway_max_ongoing``; past it, clients get
    503 with Retry-After at once instead of waiting in an ever longer queue."""
    serve_model_threads: Literal["auto"] | Annotated[int, Field(ge=0, le=256)] = "auto"
    """Torch threads for a model-server replica's forward passes. ``auto``: per model, by the cost
    of its forward pass timed when the replica loads it: one thread for a light model, where the
    gateway is the bottleneck and a second OpenMP thread takes CPU from it (MNIST CNN through the
    gateway on 2 cores: 679 req/s at 32 clients with two threads, 819 and 693 with one); every CPU
    the replica's process may use for a heavy one, whose forward pass bounds what it serves (MiniLM:
    120 req/s with two, 92 with one). A number fixes it for every model (0: every CPU)."""
    serve_min_replicas: int = Field(1, ge=0, le=64)
    serve_max_replicas: int = Field(2, ge=1, le=256)
    """Model-server autoscaling bounds."""
    serve_request_timeout_s: float = Field(120.0, gt=0)
    """Serve's HTTP proxy ends a request that takes longer (a compression or analysis runs as a
    Ray task the API waits for; predictions take milliseconds)."""
    serve_onnx_run_timeout_s: float = Field(10.0, gt=0, le=600)
    """Deadline of one ONNX Runtime call on a model server (an imported graph's forward pass over
    a batch): a call still running is stopped and that request fails (503); Serve's request
    timeout cannot stop it. Imports must answer their smoke predictions within it too."""
    serve_store_inputs: bool = True
    """Also keep each prediction's raw input in storage (``results/inputs/<digest>``, once per
    distinct input): what the UI shows of what was sent. ``false`` keeps none."""
    result_retention_days: float | None = Field(30.0, gt=0)
    """Results older than this move from the live table to parquet in storage
    (``results/archive/model=<m>/day=<d>/``), where exports and drift analysis still read them
    (None: by age, none move)."""
    result_retention_rows_per_model: int | None = Field(None, ge=1)
    """Keep at most this many of each model's newest results live; older ones move likewise."""
    result_retention_interval_s: float = Field(3600.0, gt=0)
    """How often the result store applies its retention policy."""

    api_token: SecretStr | None = None
    """The token the API, inference endpoints and UI data need (``Authorization: Bearer <token>``;
    health probes excepted); the CLI sends it. ``aip up`` makes one when none is set."""
    project: str | None = Field(None, max_length=64)
    """The project a client (the CLI, the SDK) acts in (``X-AIP-Project``); none: the key's
    project, else ``default``. ``aip --project NAME`` sets it for one command."""
    api_auth: Literal["token", "off"] = "token"
    """``token``: every request needs ``api_token``, and with no token configured the platform
    refuses them all (it fails closed). ``off``: no authentication; anyone who can reach the port
    can train, deploy and read every result (docs/SECURITY.md)."""
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])
    """Host names the HTTP surface answers to (the ``Host`` header, port aside): a web page that
    rebinds its own DNS name to 127.0.0.1 is refused. ``["*"]`` answers any (behind a load
    balancer that checks hosts itself)."""
    access_cache_ttl_s: float = Field(2.0, gt=0, le=300)
    """How long a gateway replica off the head node keeps what it asked the head's access actor
    (a key's principal or refusal, a signed-in user, whether a project exists): a key revoked, a
    user disabled or a role changed through another replica takes effect there within this time
    (through the same replica, at once). Where the state folder is (one machine, the head node)
    nothing is kept (``aiplatform.access.actor``). A model's project is kept 30 s everywhere."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses (IPs or CIDRs) of authenticating reverse proxies (oauth2-proxy) whose identity
    headers (``X-Forwarded-Preferred-Username``, ``X-Forwarded-User``) sign a user in: believed
    only on a connection whose own peer address is one of these (aiplatform.access.proxy).
    Empty (the default): the headers are ignored and every request needs a key."""
    sso_new_user_role: Literal["viewer", "member", "maintainer"] | None = None
    """A user a trusted proxy names who does not exist yet is made on first sign-in with this
    role in the default project (None, the default: refused until an admin makes them)."""
    sso_group_roles: list[str] = Field(default_factory=list)
    """Roles a trusted proxy's groups (``X-Forwarded-Groups``) grant on sign-in, each
    ``GROUP:PROJECT:ROLE`` (``["ml-team:vision:member"]``); ``GROUP:*:admin`` makes the group's
    members platform admins while the proxy names them in it. A role granted so is withdrawn
    when the proxy no longer names the group (aiplatform.access.proxy). Empty: groups are ignored."""

    data_root: Path | None = None
    """Local dataset sources named through the API must lie under this folder (symbolic links
    resolved). Default: ``<home>/data``."""
    dataset_s3_prefixes: list[str] = Field(default_factory=list)
    """``s3://bucket/prefix`` locations the API may name as dataset sources (none by default)."""
    dataset_http_hosts: list[str] = Field(default_factory=list)
    """Host names the API may name in ``http(s)://`` dataset sources (none by default). Their
    addresses must be public: loopback, private, link-local and metadata addresses are refused
    after DNS resolution, on every redirect too."""
    dataset_private_hosts: bool = False
    """Let the hosts above resolve to private addresses (a data server inside your network)."""
    max_http_source_bytes: int = Field(512 * 1024**2, ge=1)
    """The most an ``http(s)://`` dataset source may send (it is read on the driver)."""

    max_request_rows: int = Field(256, ge=1, le=100_000)
    """Inputs one prediction request may carry (v2 tensor rows, BYTES elements)."""
    max_text_chars: int = Field(1_000_000, ge=1)
    """Characters of one text or document, checked before it is normalised or tokenized."""
    max_image_pixels: int = Field(50_000_000, ge=1)
    """Pixels of one uploaded image (a 48 MP phone photo fits); larger ones, and decompression
    bombs, are answered 413 before they are decoded."""
    batch_max_output_rows: int = Field(20_000_000, ge=1)
    """Rows one batch job may score, and so write to its Parquet output (a row per input row,
    about 40 bytes plus 4 per class): a job over a larger input (or ``max_rows``) is refused at
    creation with 413; a ``uri`` input, whose rows are known once it is read, fails its job then."""

    dashboard_url: str | None = None
    """Ray's dashboard / job API (``http://host:8265``); unset: read from the cluster itself."""

    task_max_running: int = Field(1, ge=1, le=1024)
    """Training tasks the task manager runs at once (and only while the cluster has the CPUs)."""
    task_max_retries: int = Field(0, ge=0, le=100)
    """Default times an interrupted task (its Ray job gone) is queued again before it fails."""
    task_poll_interval_s: float = Field(1.0, gt=0, le=60)
    """How often the scheduler follows running jobs and starts queued tasks (it is also woken at
    once when a task is queued)."""
    autoscaling: bool = False
    """The cluster grows on demand (Ray's autoscaler): a task larger than the cluster waits for
    nodes (its demand is sent to the autoscaler) instead of being refused at creation."""
    user_code: bool | None = Field(None, validate_default=True)
    """API callers may run their own training code (``user-code`` tasks, ``POST /v1/code``). Whoever
    holds the API token can then run code on the cluster, as with Ray's own job API; turn it off
    where the token goes to people who may only train the platform's templates. Unset: on with
    token authentication, off with ``api_auth=off`` (anyone who reaches the port would run Python
    on the cluster); ``true`` turns it on even then. Always a bool once the settings are built."""
    task_heartbeat_timeout_s: float = Field(600.0, gt=0)
    """A run with no Ray job to follow (plain ``python -m jobs.train`` on an embedded Ray) that
    has not reported for this long is marked interrupted."""
    task_log_archive_interval_s: float = Field(10.0, gt=0, le=3600)
    """How often the scheduler copies a running task's job log (and record) to storage, where
    they outlive Ray's job and the head (``aiplatform.tasks.history``); a task's final log and
    record are copied when it ends, whatever this is."""
    task_log_archive_max_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    """The most of one attempt's job log kept in storage (its last bytes)."""

    train_worker_cpus: float = 0.5
    """CPUs each Ray Train worker reserves. Below 1 so Ray Data and Train share 2 cores
    without starving each other (a hang seen with whole CPUs on 2-core machines)."""

    train_poll_interval_s: float = Field(0.5, gt=0, le=60)
    """How often Ray Train's controller collects the workers' reports (Ray's
    ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default). A worker's ``report`` waits for the
    collection of its previous one: at Ray's 2 s a 10-report XGBoost run took 31.8 s, at 0.2 s
    11.8 s (its reports are now spaced two polls apart instead). Each poll costs the controller
    and each worker CPU: 1.4% + 1.3% of a core at 0.2 s, 0.8% + 1.0% at 1 s or 2 s (an idle
    one-worker run here); 0.5 s keeps most of that saving and waits at most 0.5 s."""

    train_keep_shard_bytes: int = Field(1 << 30, ge=0)
    """The most bytes of its shard of one split (train, val) a Ray Train worker keeps in memory
    after the first epoch (raw, as stored), so later epochs draw batches without Ray Data, whose
    executor, object-store fetches and batch conversion share the training step's cores. Only
    splits cached in Ray's object store are kept (``dataset_streaming_bytes`` says which); where
    any worker's shard is over this, every worker streams; 0 streams every epoch."""

    train_placement: Literal["PACK", "SPREAD"] = "PACK"
    """How Ray Train places a run's workers: ``PACK`` fills a node first (fastest on one
    machine); ``SPREAD`` puts them on different nodes where it can, so one lost node costs one
    worker and the run restarts from its checkpoint on the nodes left."""

    data_shuffle: Literal["sort", "hash"] = "sort"
    """Ray Data shuffle strategy for dataset builds (groupbys, dedup, shuffles): ``sort`` (the
    sort-based pull shuffle: plain tasks, fastest on small clusters) or ``hash`` (Ray's aggregator
    actors, for shuffling many GBs on a large cluster)."""

    dataset_streaming_bytes: int = Field(256 << 20, ge=0)
    """Sources and versions larger than this (stored bytes) stream, memory bounded whatever
    their size: a build goes from read to write without a global shuffle, and training reads the
    train and val files from storage every epoch in a new order instead of caching them in Ray's
    object store. Smaller ones are shuffled row by row and cached (faster epochs)."""

    compression_max_accuracy_drop: float = Field(0.01, ge=0, le=1)
    """Test accuracy (a fraction: 0.01 is one point) a compressed version may lose and still be
    registered; a request may ask for another bound."""
    background_task_cpus: float = Field(0.5, gt=0)
    """CPUs a Ray task that the API starts for compression or analysis reserves (below 1, like
    training workers, so that it starts next to the Serve replicas on a 2-core machine)."""

    alert_interval_s: float = Field(10.0, gt=0, le=3600)
    """How often the alert engine scrapes the metrics and evaluates its rules."""
    loop_interval_s: float = Field(5.0, gt=0, le=3600)
    """How often the loop engine (``aiplatform.loops``) checks its retraining policies' triggers
    and moves each open run on by a step (it is also woken at once by a manual trigger)."""
    alert_rules_file: Path | None = None
    """YAML list of alert rules (see ``aiplatform.alerting.rules``); unset: the default rules
    with the thresholds below."""
    alert_webhooks: list[SecretStr] = Field(default_factory=list)
    """URLs that get every alert change as a JSON POST (``AIP_ALERT_WEBHOOKS='["https://..."]'``)."""
    loop_webhook_secret: SecretStr | None = None
    """Signs the webhook the loop engine sends to ``alert_webhooks`` on each retraining run's
    decision (``X-AIP-Signature: sha256=<HMAC-SHA256 of "<X-AIP-Timestamp>.<body>">``); unset,
    the decisions are sent unsigned."""
    alert_latency_p99_s: float = Field(0.5, gt=0)
    alert_error_rate: float = Field(0.05, gt=0, le=1)
    alert_queue_wait_s: float = Field(600.0, gt=0)
    alert_drift_psi: float = Field(0.25, gt=0)
    quality_window_s: float = Field(86_400.0, gt=0, le=90 * 86_400)
    """Live quality (accuracy and macro-F1 of labeled predictions, per model version) is over the
    predictions made in this many seconds before now: what Prometheus, the quality alert rule
    and ``GET /v1/results/quality`` show by default."""
    alert_quality_accuracy: float = Field(0.8, gt=0, le=1)
    """The ``quality-low`` rule fires when a version's accuracy over the quality window is below this..."""
    alert_quality_min_labeled: int = Field(50, ge=1)
    """...over at least this many labeled predictions (fewer: too noisy to alert on)."""

    max_concurrent_imports: int = Field(2, ge=1, le=64)
    """ONNX imports an API process checks at once (each in a child of up to 6 GiB for up to
    300 s); one more is answered 503 with Retry-After."""
    max_package_bytes: int = 2 * 1024**3
    max_package_entry_bytes: int = 1 * 1024**3

    @field_validator("user_code")
    @classmethod
    def _user_code_follows_auth(cls, value: bool | None, info: ValidationInfo) -> bool:
        # api_auth is declared above user_code, so it is validated (or failed) already.
        return value if value is not None else info.data.get("api_auth") == "token"

    @field_validator("api_token")
    @classmethod
    def _api_token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        value = token.get_secret_value().strip()
        if len(value) < MIN_API_TOKEN_CHARS:
            # The setting is named, never its value (the model hides inputs in its errors too).
            raise ValueError(
                f"api_token (AIP_API_TOKEN) must be at least {MIN_API_TOKEN_CHARS} characters, "
                "surrounding spaces aside; unset it to have `aip up` make one"
            )
        return SecretStr(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, addresses: list[str]) -> list[str]:
        import ipaddress

        for index, address in enumerate(addresses):
            try:
                ipaddress.ip_network(address.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies (AIP_TRUSTED_PROXIES) entry #{index + 1} is not an IP address or CIDR"
                ) from None
        return [address.strip() for address in addresses]

    @field_validator("sso_group_roles")
    @classmethod
    def _group_roles(cls, entries: list[str]) -> list[str]:
        roles = ("viewer", "member", "maintainer", "admin")  # aiplatform.access.ROLES (a layer above)
        for index, entry in enumerate(entries):
            parts = [part.strip() for part in entry.split(":")]
            if len(parts) != 3 or not all(parts) or parts[2] not in roles or (parts[1] == "*" and parts[2] != "admin"):
                raise ValueError(
                    f"sso_group_roles (AIP_SSO_GROUP_ROLES) entry #{index + 1} must be GROUP:PROJECT:ROLE with a "
                    f"role of {', '.join(roles)}, or GROUP:*:admin for platform admins"
                )
        return [":".join(part.strip() for part in entry.split(":")) for entry in entries]

    @field_validator("train_worker_cpus")
    @classmethod
    def _positive_cpus(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("train_worker_cpus must be > 0")
        return value

    @field_validator("alert_webhooks")
    @classmethod
    def _webhook_urls(cls, urls: list[SecretStr]) -> list[SecretStr]:
        from urllib.parse import urlparse

        for index, url in enumerate(urls):
            parsed = urlparse(url.get_secret_value())
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                # The URL itself is not echoed: webhook URLs carry their service's token.
                raise ValueError(f"webhook URL #{index + 1} must be an absolute http(s) URL")
        return urls

    @property
    def webhook_urls(self) -> list[str]:
        return [url.get_secret_value() for url in self.alert_webhooks]

    @model_validator(mode="after")
    def _replica_bounds(self) -> Settings:
        if self.serve_min_replicas > self.serve_max_replicas:
            raise ValueError("serve_min_replicas must not exceed serve_max_replicas")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as ``AIP_*`` variables, for the Ray jobs the platform starts (so a job
        sees the same state and storage as the platform; its Ray address comes from Ray). Secrets
        are left out: the jobs the platform submits get the S3 keys alone, from
        ``aiplatform.runtime.storage_credentials_env``."""
        env = {}
        # Webhook URLs often carry tokens, and jobs do not send alerts.
        secret = {
            "ray_address",
            "s3_access_key_id",
            "s3_secret_access_key",
            "alert_webhooks",
            "api_token",
            "loop_webhook_secret",
        }
        for name, value in self.model_dump(exclude=secret).items():
            if value is None:
                continue
            if isinstance(value, bool):
                env[f"AIP_{name.upper()}"] = str(value).lower()
            elif isinstance(value, (list, dict)):
                env[f"AIP_{name.upper()}"] = json.dumps(value)
            else:
                env[f"AIP_{name.upper()}"] = str(value)
        return env

    def api_auth_headers(self) -> dict[str, str]:
        """What a client of the platform sends: ``Authorization`` when ``AIP_API_TOKEN`` is set."""
        token = self.api_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
        return headers if self.project is None else {**headers, "X-AIP-Project": self.project}

    @property
    def resolved_api_url(self) -> str:
        return (self.api_url or f"http://127.0.0.1:{self.http_port}").rstrip("/")

    @property
    def resolved_storage_uri(self) -> str:
        return self.storage_uri or str(self.home / "artifacts")

    @property
    def s3_storage_options(self) -> dict[str, object]:
        """fsspec options for ``s3://`` dataset sources (same endpoint and keys as storage)."""
        options: dict[str, object] = {}
        if self.s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        if self.s3_access_key_id:
            options["key"] = self.s3_access_key_id.get_secret_value()
        if self.s3_secret_access_key:
            options["secret"] = self.s3_secret_access_key.get_secret_value()
        return options

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or (self.home / "state")

    @property
    def resolved_data_root(self) -> Path:
        return self.data_root or (self.home / "data")
