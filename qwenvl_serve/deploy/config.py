"""The deployment file: every model, its replicas, and the nginx and systemd settings.

One typed model, like the instance config: each field carries its description, unknown
keys are errors, and `qwenvl-serve render --reference` prints the reference from it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from qwenvl_serve.config_base import StrictModel

# A model's name is a URL path segment, part of nginx and systemd names: keep it plain.
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
# Path segments the top level of the nginx server already uses for itself.
RESERVED_NAMES = frozenset({"v1", "v1beta", "health", "metrics", "playground"})
RATE = re.compile(r"^[1-9][0-9]*r/[sm]$")
HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
LISTEN = re.compile(r"^(?:(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_GPUS = 64

# Characters that would end or split a word in an nginx or systemd file.
UNSAFE_IN_PATH = re.compile(r"[\s;{}'\"%$\\#]")


def _absolute_plain_path(value: str) -> str:
    if not value.startswith("/") or UNSAFE_IN_PATH.search(value):
        raise PydanticCustomError(
            "path", "must be an absolute path without spaces, quotes, ;, {, }, %, $, # or \\"
        )
    return value


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value))
    except ValueError:
        raise PydanticCustomError("network", "must be an address or ADDRESS/PREFIX") from None


AbsolutePath = Annotated[str, AfterValidator(_absolute_plain_path)]
Network = Annotated[str, AfterValidator(_network)]


def _default_metrics_networks() -> list[str]:
    return ["127.0.0.0/8", "::1/128"]


def split_address(address: str) -> tuple[str, int]:
    """``"10.0.0.5:8001"`` or ``"[fd00::5]:8001"`` into host and port; ValueError otherwise."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{address!r}: port must be 1-65535")
    if not HOST.match(host):
        raise ValueError(f"{address!r}: {host!r} is not a host name or address")
    return host, port


class Replica(StrictModel):
    """One instance of a model: the address nginx sends to and the instance binds."""

    address: str = Field(
        description=(
            "HOST:PORT of the instance; the instance binds this address on that host "
            "(`[v6addr]:port` for IPv6)."
        ),
    )
    gpus: list[Annotated[int, Field(ge=0, lt=MAX_GPUS)]] | None = Field(
        None,
        description=(
            "GPU indexes for CUDA_VISIBLE_DEVICES. Empty: the next free ones on that host, "
            "as many as the model's `engine.tensor_parallel_size`, in file order."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _from_plain_address(cls, value: Any) -> Any:
        return {"address": value} if isinstance(value, str) else value

    @field_validator("address")
    @classmethod
    def _address_is_host_port(cls, value: str) -> str:
        try:
            split_address(value)
        except ValueError as exc:
            raise PydanticCustomError("address", str(exc)) from None
        return value

    @property
    def host(self) -> str:
        """The host part, brackets kept for IPv6."""
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        """The TCP port."""
        return split_address(self.address)[1]


class ModelLimits(StrictModel):
    """nginx limits for one model, where it needs other values than the server's."""

    max_body_mib: float | None = Field(
        None,
        gt=0,
        description=(
            "Largest request body for this model's inference routes, in MiB. Empty: derived "
            "from its instance config (`images.max_bytes` x images per request x 4/3 for "
            "base64, plus 1 MiB), capped by `limits.max_body_mib`."
        ),
    )
    read_timeout_seconds: int | None = Field(
        None,
        ge=1,
        description="Longest pause between two reads from the instance. Empty: the server's.",
    )
    connections_per_ip: int | None = Field(
        None,
        ge=1,
        description="Open inference connections per client address. Empty: the server's.",
    )


class ModelEntry(StrictModel):
    """One model: a URL prefix, its instance config and where its replicas run."""

    name: str = Field(
        description=(
            "URL prefix and unit name: the OpenAI base URL is `/<name>/v1`. Lowercase "
            "letters, digits and `-`."
        ),
    )
    config: Path = Field(
        description="The instance config file (YAML), relative to the deployment file."
    )
    replicas: list[Replica] = Field(
        min_length=1,
        description="HOST:PORT of every instance of this model; several hosts are allowed.",
    )
    default: bool = Field(
        False, description="Also serve this model at `/v1`; at most one model may be default."
    )
    limits: ModelLimits = Field(
        default_factory=ModelLimits,  # type: ignore[arg-type]
        description="nginx limits for this model only.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_plain_segment(cls, value: str) -> str:
        if not MODEL_NAME.match(value):
            raise PydanticCustomError(
                "model_name", "lowercase letters, digits and `-`, at most 32, not starting with `-`"
            )
        if value in RESERVED_NAMES:
            raise PydanticCustomError(
                "model_name", "{name} is a path the server uses itself", {"name": value}
            )
        return value


class TlsConfig(StrictModel):
    """TLS on nginx's listener."""

    certificate: AbsolutePath = Field(description="PEM certificate chain file.")
    certificate_key: AbsolutePath = Field(description="PEM private key file.")


class ServerConfig(StrictModel):
    """nginx's server block: where it listens and what it logs."""

    listen: str | None = Field(
        None,
        description=(
            "nginx `listen` address: PORT, HOST:PORT or [V6ADDR]:PORT. Empty: 80; with `tls`, "
            "443, plus a server on 80 that redirects to https. Given: used as is (with `tls` "
            "and port 443, the redirect from port 80 of the same host is added too)."
        ),
    )
    server_name: str = Field(
        "_",
        min_length=1,
        description=(
            "nginx `server_name`. `_` names no host: the server is then rendered as "
            "`default_server` to answer every host on its port, so the distribution's own "
            "default site (Debian: sites-enabled/default) must be removed."
        ),
    )
    tls: TlsConfig | None = Field(None, description="TLS certificate and key. Empty: plain HTTP.")
    access_log: AbsolutePath = Field(
        "/var/log/nginx/qwenvl-serve.access.log",
        description="JSON access log: one line per request with upstream timing; no query string.",
    )
    error_log: AbsolutePath = Field(
        "/var/log/nginx/qwenvl-serve.error.log", description="nginx error log."
    )
    metrics_networks: list[Network] = Field(
        default_factory=_default_metrics_networks,
        description="Client networks allowed to read `/<name>/metrics` through nginx.",
    )

    @field_validator("listen")
    @classmethod
    def _listen_is_an_address(cls, value: str | None) -> str | None:
        if value is not None and not LISTEN.match(value):
            raise PydanticCustomError("listen", "must be PORT, HOST:PORT or [V6ADDR]:PORT")
        return value

    @property
    def listen_address(self) -> str:
        """Where the main server listens: as given, else 443 with TLS and 80 without."""
        if self.listen is not None:
            return self.listen
        return "80" if self.tls is None else "443"

    @property
    def redirect_listen(self) -> str | None:
        """Port 80 of the TLS listener's host, for the plain redirect to https; only when
        TLS is on the standard port 443, where `https://$host` points."""
        if self.tls is None:
            return None
        host, sep, port = self.listen_address.rpartition(":")
        if port != "443":
            return None
        return f"{host}{sep}80"

    @field_validator("server_name")
    @classmethod
    def _server_name_is_one_word_list(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.*~^$ -]+$", value) or ";" in value:
            raise PydanticCustomError("server_name", "must be nginx server names")
        return value


class EdgeLimits(StrictModel):
    """Request caps nginx applies before anything reaches an instance."""

    rate_per_ip: str | None = Field(
        "10r/s",
        description="Requests per client address, as nginx writes it (`10r/s`, `600r/m`).",
    )
    burst_per_ip: int = Field(20, ge=0, description="Requests per address allowed above the rate.")
    rate_per_key: str | None = Field(
        "20r/s",
        description=(
            "Requests per API key (from `Authorization: Bearer`, `x-goog-api-key` or `?key=`), "
            "across all replicas. Empty: no per-key limit at the edge."
        ),
    )
    burst_per_key: int = Field(40, ge=0, description="Requests per key allowed above the rate.")
    connections_per_ip: int = Field(
        32, ge=1, description="Open inference connections per client address."
    )
    max_body_mib: float | None = Field(
        None,
        gt=0,
        description="Upper bound on every model's request body size, in MiB. Empty: none.",
    )

    @field_validator("rate_per_ip", "rate_per_key")
    @classmethod
    def _rate_is_nginx_rate(cls, value: str | None) -> str | None:
        if value is not None and not RATE.match(value):
            raise PydanticCustomError("rate", "must be like 10r/s or 600r/m")
        return value


class Timeouts(StrictModel):
    """nginx timeouts towards the instances and the clients."""

    connect_seconds: int = Field(
        5, ge=1, description="Connecting to an instance; then the next replica is tried."
    )
    read_seconds: int = Field(
        600,
        ge=1,
        description=(
            "Longest pause between two reads from an instance. Streams send every token; a "
            "non-streaming answer sends nothing until done, so size it for the longest one."
        ),
    )
    send_seconds: int = Field(60, ge=1, description="Longest pause sending a request body.")
    client_body_seconds: int = Field(
        15, ge=1, description="Longest pause between two reads of a client's request body."
    )
    client_header_seconds: int = Field(
        10,
        ge=1,
        description=(
            "Longest time to receive a client's request headers (the server behind cannot "
            "bound slow headers itself)."
        ),
    )
    client_send_seconds: int = Field(
        60, ge=1, description="Longest pause between two writes to a client that reads slowly."
    )
    client_keepalive_seconds: int = Field(
        30, ge=0, description="How long an idle client connection is kept open; 0 closes it."
    )


class UpstreamConfig(StrictModel):
    """How nginx balances over a model's replicas and notices a dead one."""

    max_fails: int = Field(
        2,
        ge=1,
        description="Failed attempts within `fail_timeout_seconds` that mark a replica down.",
    )
    fail_timeout_seconds: int = Field(
        10,
        ge=1,
        description="Window for counting failures, and how long a replica then stays out.",
    )
    next_upstream_tries: int = Field(
        2,
        ge=1,
        description=(
            "Replicas tried per request on a connection error or timeout (POSTs only while "
            "nothing was sent yet)."
        ),
    )
    keepalive: int = Field(
        32, ge=1, description="Idle keep-alive connections each nginx worker keeps per model."
    )
    keepalive_timeout_seconds: int = Field(
        4,
        ge=1,
        description=(
            "How long an idle upstream connection is kept. Must stay below the instance's own "
            "keep-alive (vLLM: 5 s, VLLM_HTTP_TIMEOUT_KEEP_ALIVE), or a POST can meet a "
            "connection the instance just closed."
        ),
    )


class SystemdConfig(StrictModel):
    """The systemd template unit every instance runs under."""

    user: str = Field(
        "qwenvl-serve", description="Dedicated system user (and group) the instances run as."
    )
    executable: AbsolutePath = Field(
        "/opt/qwenvl-serve/bin/qwenvl-serve",
        description="The installed `qwenvl-serve` program.",
    )
    config_dir: AbsolutePath = Field(
        "/etc/qwenvl-serve",
        description="Where `models/<name>.yaml` and `instances/<instance>.env` are installed.",
    )
    read_write_paths: list[AbsolutePath] = Field(
        default_factory=list,
        description=(
            "Further writable paths besides the state and cache directories and every "
            "`metering.usage_log` directory (the rest of the file system is read-only)."
        ),
    )
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for every instance (e.g. `HF_HUB_OFFLINE: '1'`).",
    )
    limit_nofile: int = Field(65536, ge=1024, description="Open file limit (LimitNOFILE).")
    restart_seconds: int = Field(
        10, ge=1, description="Wait before restarting a failed instance (RestartSec)."
    )
    start_limit_burst: int = Field(
        5, ge=1, description="Restarts within `start_limit_interval_seconds` before giving up."
    )
    start_limit_interval_seconds: int = Field(
        900, ge=1, description="Window for `start_limit_burst` (StartLimitIntervalSec)."
    )
    stop_margin_seconds: int = Field(
        30,
        ge=0,
        description=(
            "TimeoutStopSec is the longest `shutdown.drain_seconds` of the models plus this, "
            "for the engine to release its memory."
        ),
    )

    @field_validator("user")
    @classmethod
    def _user_is_a_system_name(cls, value: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value):
            raise PydanticCustomError("user", "must be a system user name")
        return value

    @field_validator("environment")
    @classmethod
    def _environment_names_are_plain(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not ENV_NAME.match(name) or "\n" in text:
                raise PydanticCustomError(
                    "environment", "names must be A-Z, 0-9, _; one-line values"
                )
        return value


class DeploymentConfig(StrictModel):
    """A whole deployment: models behind one nginx server, each instance a systemd unit."""

    models: list[ModelEntry] = Field(
        min_length=1, description="The models; each gets its own upstream and URL prefix."
    )
    server: ServerConfig = Field(
        default_factory=ServerConfig,  # type: ignore[arg-type]
        description="nginx listener and logs.",
    )
    limits: EdgeLimits = Field(
        default_factory=EdgeLimits,  # type: ignore[arg-type]
        description="Request caps at the edge.",
    )
    timeouts: Timeouts = Field(
        default_factory=Timeouts,  # type: ignore[arg-type]
        description="nginx timeouts.",
    )
    upstream: UpstreamConfig = Field(
        default_factory=UpstreamConfig,  # type: ignore[arg-type]
        description="Balancing and passive health checks.",
    )
    systemd: SystemdConfig = Field(
        default_factory=SystemdConfig,  # type: ignore[arg-type]
        description="The instances' systemd unit.",
    )

    @field_validator("models")
    @classmethod
    def _models_are_consistent(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        names = [model.name for model in models]
        if len(set(names)) != len(names):
            raise PydanticCustomError("models", "model names must be unique")
        if sum(model.default for model in models) > 1:
            raise PydanticCustomError("models", "at most one model may be `default: true`")
        addresses = [replica.address for model in models for replica in model.replicas]
        if len(set(addresses)) != len(addresses):
            raise PydanticCustomError("models", "every replica needs its own HOST:PORT")
        return models

    @property
    def default_model(self) -> ModelEntry | None:
        """The model also served at `/v1`, if any."""
        return next((model for model in self.models if model.default), None)
