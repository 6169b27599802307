"""Render the nginx configuration for a deployment: a pure function of the Deployment.

The output is an http-context file (Debian: /etc/nginx/conf.d/qwenvl-serve.conf):
one upstream per model, an exact location per allowlisted route, and a 404 for every
other path. Names it defines all start with ``qwenvl_`` so it sits beside other sites.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from qwenvl_serve.api_errors import ApiError
from qwenvl_serve.deploy.body_size import body_limit_mib
from qwenvl_serve.deploy.config import DeploymentConfig
from qwenvl_serve.deploy.loading import DeployedModel, Deployment
from qwenvl_serve.routes import (
    HEALTH_PATH,
    INFERENCE_PATHS,
    METRICS_PATH,
    MODELS_PATH,
    PLAYGROUND_PREFIX,
    generate_content_pattern,
)

INDENT = "    "
PER_IP_ZONE = "qwenvl_per_ip"
PER_KEY_ZONE = "qwenvl_per_key"
CONN_ZONE = "qwenvl_conn_per_ip"
LOG_FORMAT = "qwenvl_json"
# Model names that can stand in a generateContent path and in an nginx map key as is.
ROUTABLE_NAME = re.compile(r"^[A-Za-z0-9._@+-]+$")
GENAI_PATH = generate_content_pattern()
GENAI_PATH_MODEL = generate_content_pattern("(?<qwenvl_model>")
# Longest exact map key that fits nginx's default map_hash_bucket_size (64 bytes).
MAX_HASHED_KEY = 48

NOT_FOUND = ApiError(
    404, "Unknown path. This server answers the OpenAI and generateContent routes."
)
UNKNOWN_MODEL = ApiError(404, "No model of that name is served here.")
TOO_LARGE = ApiError(413, "The request body is too large for this model.")
RATE_LIMITED = ApiError(
    429,
    "Too many requests; slow down and retry.",
    code="rate_limited",
    headers=(("Retry-After", "1"),),
)
UNAVAILABLE = ApiError(
    503, "No replica of this model is reachable; retry shortly.", headers=(("Retry-After", "1"),)
)
TIMED_OUT = ApiError(504, "The model server did not answer in time.")
# nginx's own error status -> what the client gets. Errors the instances answer
# themselves pass through untouched; these are only the ones nginx makes.
ERROR_PAGES = ((413, TOO_LARGE), (429, RATE_LIMITED), (502, UNAVAILABLE), (504, TIMED_OUT))

ACCESS_LOG_FIELDS = (
    ("time", "$time_iso8601"),
    ("request_id", "$qwenvl_request_id"),
    ("remote_addr", "$remote_addr"),
    ("method", "$request_method"),
    ("path", "$uri"),  # never $request_uri: `?key=` would put a secret in the log
    ("status", "$status"),
    ("request_bytes", "$request_length"),
    ("response_bytes", "$bytes_sent"),
    ("request_time", "$request_time"),
    ("upstream_addr", "$upstream_addr"),
    ("upstream_status", "$upstream_status"),
    ("upstream_connect_time", "$upstream_connect_time"),
    ("upstream_header_time", "$upstream_header_time"),
    ("upstream_response_time", "$upstream_response_time"),
)

# Always numbers in nginx; the upstream ones can be lists ("0.002, 0.004") or "-".
NUMERIC_LOG_FIELDS = frozenset({"status", "request_bytes", "response_bytes", "request_time"})


@dataclass(frozen=True)
class ModelRoutes:
    """What the locations of one model need, worked out once."""

    upstream: str
    body_mib: int
    read_timeout: int
    connections_per_ip: int
    playground: bool


def render_nginx(deployment: Deployment) -> str:
    """The complete nginx configuration text for ``deployment``."""
    config = deployment.config
    routes = {model.entry.name: model_routes(model, config) for model in deployment.models}
    sections = [
        header(deployment.source),
        http_settings(config),
        request_maps(deployment),
        *(upstream_block(model, config) for model in deployment.models),
        server_block(deployment, routes),
        redirect_block(config),
    ]
    return "\n".join("\n".join(lines) + "\n" for lines in sections if lines)


def model_routes(model: DeployedModel, config: DeploymentConfig) -> ModelRoutes:
    """A model's limits: its own where set, else the server's."""
    limits = model.entry.limits
    return ModelRoutes(
        upstream=upstream_name(model.entry.name),
        body_mib=body_limit_mib(model.instance, limits.max_body_mib, config.limits.max_body_mib),
        read_timeout=limits.read_timeout_seconds or config.timeouts.read_seconds,
        connections_per_ip=limits.connections_per_ip or config.limits.connections_per_ip,
        playground=model.instance.playground.enabled,
    )


def upstream_name(model_name: str) -> str:
    """The nginx upstream of a model."""
    return "qwenvl_" + model_name.replace("-", "_")


def header(source: str) -> list[str]:
    return [
        f"# Rendered by `qwenvl-serve render` from {source}; edit that file, not this one.",
        "# http-context configuration: install as /etc/nginx/conf.d/qwenvl-serve.conf.",
    ]


def http_settings(config: DeploymentConfig) -> list[str]:
    """Log format, rate-limit zones and their statuses (http context)."""
    fields = ",".join(
        f'"{name}":{value}' if name in NUMERIC_LOG_FIELDS else f'"{name}":"{value}"'
        for name, value in ACCESS_LOG_FIELDS
    )
    limits = config.limits
    lines = [
        f"log_format {LOG_FORMAT} escape=json '{{{fields}}}';",
        "",
        "# Clients over a rate or connection cap get 429, like the instances' own limits.",
    ]
    if limits.rate_per_ip is not None:
        lines.append(
            f"limit_req_zone $binary_remote_addr zone={PER_IP_ZONE}:10m rate={limits.rate_per_ip};"
        )
    if limits.rate_per_key is not None:
        lines.append(
            f"limit_req_zone $qwenvl_api_key zone={PER_KEY_ZONE}:10m rate={limits.rate_per_key};"
        )
    lines += [
        f"limit_conn_zone $binary_remote_addr zone={CONN_ZONE}:10m;",
        "limit_req_status 429;",
        "limit_conn_status 429;",
        "# Rejections are logged with the request line, `?key=` included: log them below",
        "# the error log's threshold (warn) so API keys stay out of it.",
        "limit_req_log_level info;",
        "limit_conn_log_level info;",
    ]
    return lines


def request_maps(deployment: Deployment) -> list[str]:
    """Request id, API key, and which upstream a generateContent path names."""
    genai_entries = [
        f"{map_key(name)} {upstream_name(model.entry.name)};"
        for model in deployment.models
        for name in genai_names(model)
    ]
    return [
        "# The client's X-Request-ID when it is sane (the instances apply the same rule),",
        "# else nginx's own random id; sent upstream and written to the access log.",
        *block(
            "map $http_x_request_id $qwenvl_request_id",
            ["default $request_id;", '"~^[A-Za-z0-9._:@/+=-]{1,128}$" $http_x_request_id;'],
        ),
        "",
        "# The API key, for the per-key rate: Bearer token, else x-goog-api-key, else ?key=.",
        *block(
            "map $http_authorization $qwenvl_bearer_key",
            ['default "";', '"~*^bearer\\s+(?<qwenvl_token>\\S+)$" $qwenvl_token;'],
        ),
        *block(
            "map $http_x_goog_api_key $qwenvl_google_key",
            ["default $http_x_goog_api_key;", '"" $arg_key;'],
        ),
        *block(
            "map $qwenvl_bearer_key $qwenvl_api_key",
            ["default $qwenvl_bearer_key;", '"" $qwenvl_google_key;'],
        ),
        "",
        "# generateContent paths carry the model name: route by it.",
        *block(
            "map $uri $qwenvl_genai_model",
            ['default "";', f'"~^/{GENAI_PATH_MODEL}" $qwenvl_model;'],
        ),
        *block("map $qwenvl_genai_model $qwenvl_genai_upstream", ['default "";', *genai_entries]),
        "",
        "# Errors nginx itself answers use the Google format on generateContent paths.",
        *block(
            "map $uri $qwenvl_google_route",
            ["default 0;", f'"~^(/[a-z0-9-]+)?/{GENAI_PATH}" 1;'],
        ),
    ]


def map_key(name: str) -> str:
    """An exact map key, or for a name too long for nginx's default map hash bucket an
    anchored regex (only `.` and `+` of the allowed characters mean anything there)."""
    if len(name) <= MAX_HASHED_KEY:
        return name
    return '"~^' + name.replace(".", "\\.").replace("+", "\\+") + '$"'


def genai_names(model: DeployedModel) -> list[str]:
    """Model names a generateContent path may carry for this model (served name, aliases)."""
    names = [model.instance.public_model_name, *model.instance.generate_content.model_aliases]
    return [name for name in names if ROUTABLE_NAME.match(name)]


def upstream_block(model: DeployedModel, config: DeploymentConfig) -> list[str]:
    """One upstream per model: least connections, passive health, keep-alive."""
    upstream = config.upstream
    servers = [
        f"server {replica.address} max_fails={upstream.max_fails} "
        f"fail_timeout={upstream.fail_timeout_seconds}s;"
        for replica in model.entry.replicas
    ]
    return [
        f"# {model.entry.name}: {model.instance.model} as {model.instance.public_model_name}",
        *block(
            f"upstream {upstream_name(model.entry.name)}",
            [
                "least_conn;",
                *servers,
                f"keepalive {upstream.keepalive};",
                f"keepalive_timeout {upstream.keepalive_timeout_seconds}s;",
            ],
        ),
    ]


def server_block(deployment: Deployment, routes: dict[str, ModelRoutes]) -> list[str]:
    """The server: shared proxy settings, every model's routes, errors, and the 404."""
    config = deployment.config
    body: list[str] = [
        *listen_lines(config),
        f"access_log {config.server.access_log} {LOG_FORMAT};",
        f"error_log {config.server.error_log} warn;",
        "server_tokens off;",
        "gzip off;  # compressing a stream would hold its chunks back",
        "client_max_body_size 1m;  # inference routes set their own, from the image limits",
        "# Slow clients: uvicorn has no header deadline, so nginx bounds every phase.",
        f"client_header_timeout {config.timeouts.client_header_seconds}s;",
        f"client_body_timeout {config.timeouts.client_body_seconds}s;",
        f"send_timeout {config.timeouts.client_send_seconds}s;",
        f"keepalive_timeout {config.timeouts.client_keepalive_seconds}s;",
        "",
        "# Keep-alive to the instances needs HTTP/1.1 and no Connection header passed on.",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Request-ID $qwenvl_request_id;",
        f"proxy_connect_timeout {config.timeouts.connect_seconds}s;",
        f"proxy_send_timeout {config.timeouts.send_seconds}s;",
        f"proxy_read_timeout {config.timeouts.read_seconds}s;",
        "# A replica that refuses or times out: try the next one (a POST only while",
        "# nothing was sent, so a generation never runs twice).",
        "proxy_next_upstream error timeout;",
        f"proxy_next_upstream_tries {config.upstream.next_upstream_tries};",
        "",
        *error_pages(),
    ]
    for model in deployment.models:
        body += ["", f"# ---- {model.entry.name} at /{model.entry.name}/v1"]
        body += model_locations(f"/{model.entry.name}", routes[model.entry.name], config)
        body += metrics_location(model.entry.name, routes[model.entry.name], config)
    default = config.default_model
    if default is not None:
        body += ["", f"# ---- {default.name} is the default model: also at /v1"]
        body += model_locations("", routes[default.name], config)
    body += ["", *genai_by_name_location(deployment, routes)]
    body += ["", "# Every other path, /tokenize and /docs included.", *not_found_location()]
    return block("server", body)


def listen_directive(address: str, server_name: str, *flags: str) -> str:
    """``listen``; with server_name `_` also ``default_server``: `_` is no catch-all name,
    and without it another site's default_server (Debian's default) takes the requests."""
    words = [address, *flags]
    if server_name == "_":
        words.append("default_server")
    return f"listen {' '.join(words)};"


def listen_lines(config: DeploymentConfig) -> list[str]:
    server = config.server
    address = server.listen_address
    if server.tls is None:
        return [
            listen_directive(address, server.server_name),
            f"server_name {server.server_name};",
        ]
    return [
        listen_directive(address, server.server_name, "ssl"),
        f"server_name {server.server_name};",
        f"ssl_certificate {server.tls.certificate};",
        f"ssl_certificate_key {server.tls.certificate_key};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_session_cache shared:qwenvl_tls:10m;",
        "ssl_session_timeout 1h;",
    ]


def redirect_block(config: DeploymentConfig) -> list[str]:
    """With TLS on 443: a plain server on port 80 that sends clients to https."""
    server = config.server
    address = server.redirect_listen
    if address is None:
        return []
    return [
        "# Plain HTTP on port 80: permanently redirected to https.",
        *block(
            "server",
            [
                listen_directive(address, server.server_name),
                f"server_name {server.server_name};",
                f"access_log {server.access_log} {LOG_FORMAT};",
                f"error_log {server.error_log} warn;",
                "server_tokens off;",
                "return 301 https://$host$request_uri;",
            ],
        ),
    ]


def model_locations(prefix: str, routes: ModelRoutes, config: DeploymentConfig) -> list[str]:
    """The allowlisted routes of one model under ``prefix`` ("" for the default model)."""
    upstream = f"http://{routes.upstream}"
    lines: list[str] = []
    for route in INFERENCE_PATHS:
        lines += block(
            f"location = {prefix}{route}",
            [*inference_settings(routes, config), f"proxy_pass {upstream}{route};"],
        )
    lines += block(
        f"location = {prefix}{MODELS_PATH}",
        [*rate_limits(config), f"proxy_pass {upstream}{MODELS_PATH};"],
    )
    lines += block(f"location = {prefix}{HEALTH_PATH}", [f"proxy_pass {upstream}{HEALTH_PATH};"])
    if routes.playground:
        lines += block(
            f"location = {prefix}{PLAYGROUND_PREFIX}",
            [*rate_limits(config), f"proxy_pass {upstream}{PLAYGROUND_PREFIX};"],
        )
        lines += block(
            f"location {prefix}{PLAYGROUND_PREFIX}/",
            [*rate_limits(config), f"proxy_pass {upstream}{PLAYGROUND_PREFIX}/;"],
        )
    if prefix:
        lines += block(
            f"location ~ ^{prefix}/{GENAI_PATH}",
            [
                *inference_settings(routes, config),
                f"rewrite ^{prefix}(/.*)$ $1 break;",
                f"proxy_pass {upstream};",
            ],
        )
    return lines


def metrics_location(name: str, routes: ModelRoutes, config: DeploymentConfig) -> list[str]:
    """/<name>/metrics, for the configured networks only (scrape replicas directly for
    per-replica numbers: through nginx a scrape reaches one replica at a time)."""
    allows = [f"allow {network};" for network in config.server.metrics_networks]
    return block(
        f"location = /{name}{METRICS_PATH}",
        [*allows, "deny all;", f"proxy_pass http://{routes.upstream}{METRICS_PATH};"],
    )


def inference_settings(routes: ModelRoutes, config: DeploymentConfig) -> list[str]:
    """Limits and streaming settings of the routes that run the model."""
    return [
        *rate_limits(config),
        f"limit_conn {CONN_ZONE} {routes.connections_per_ip};",
        f"client_max_body_size {routes.body_mib}m;",
        "proxy_buffering off;  # pass each streamed chunk on as it arrives",
        "proxy_request_buffering off;",
        f"proxy_read_timeout {routes.read_timeout}s;",
    ]


def rate_limits(config: DeploymentConfig) -> list[str]:
    limits = config.limits
    lines = []
    if limits.rate_per_ip is not None:
        lines.append(f"limit_req zone={PER_IP_ZONE} burst={limits.burst_per_ip} nodelay;")
    if limits.rate_per_key is not None:
        lines.append(f"limit_req zone={PER_KEY_ZONE} burst={limits.burst_per_key} nodelay;")
    return lines


def genai_by_name_location(deployment: Deployment, routes: dict[str, ModelRoutes]) -> list[str]:
    """/v1(beta)/models/{model}:generateContent, sent to the model the path names."""
    largest = max(routes.values(), key=lambda r: r.body_mib)
    longest = max(route.read_timeout for route in routes.values())
    connections = max(route.connections_per_ip for route in routes.values())
    shared = ModelRoutes("", largest.body_mib, longest, connections, playground=False)
    return [
        "# generateContent by model name: the map above picks the upstream.",
        *block(
            f"location ~ ^/{GENAI_PATH}",
            [
                "default_type application/json;  # for the 404 below; answers bring their own",
                *block(
                    'if ($qwenvl_genai_upstream = "")',
                    [
                        "add_header X-Request-ID $qwenvl_request_id always;",
                        f"return 404 {nginx_string(UNKNOWN_MODEL.google_body())};",
                    ],
                ),
                *inference_settings(shared, deployment.config),
                "proxy_pass http://$qwenvl_genai_upstream;",
            ],
        ),
    ]


def not_found_location() -> list[str]:
    return block(
        "location /",
        [*json_headers(), f"return 404 {nginx_string(NOT_FOUND.openai_body())};"],
    )


def error_pages() -> list[str]:
    """nginx's own errors as JSON in the format of the route's API."""
    lines = [
        f"error_page {status} ={error.status} @qwenvl_{status};" for status, error in ERROR_PAGES
    ]
    for status, error in ERROR_PAGES:
        extra = [f"add_header {name} {value} always;" for name, value in error.headers]
        lines += block(
            f"location @qwenvl_{status}",
            [
                *json_headers(),
                *extra,
                *block(
                    "if ($qwenvl_google_route)",
                    [f"return {error.status} {nginx_string(error.google_body())};"],
                ),
                f"return {error.status} {nginx_string(error.openai_body())};",
            ],
        )
    return lines


def json_headers() -> list[str]:
    return ["default_type application/json;", "add_header X-Request-ID $qwenvl_request_id always;"]


def nginx_string(body: dict[str, object]) -> str:
    """A JSON body as a single-quoted nginx string; it must need no escaping."""
    text = json.dumps(body, ensure_ascii=True, separators=(",", ":"))
    if any(char in text for char in "'\\$"):
        raise ValueError(f"error body needs nginx escaping: {text}")
    return f"'{text}'"


def block(head: str, body: Iterable[str]) -> list[str]:
    """``head { body }`` with the body indented."""
    return [f"{head} {{", *(indent(line) for line in body), "}"]


def indent(line: str) -> str:
    return f"{INDENT}{line}" if line else line
