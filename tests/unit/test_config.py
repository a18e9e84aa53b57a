"""The settings types: one frozen group per concern, defaults stated once, values checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from modelport.config import (
    SAGEMAKER_MODEL_DIR_ENV,
    SAGEMAKER_PORT_ENV,
    TRUST_PICKLE_ENV,
    AuthSettings,
    BrowserSettings,
    InferenceLogSettings,
    LimitSettings,
    ListenSettings,
    LoggingSettings,
    MetricsSettings,
    ModelSettings,
    ModelsSettings,
    ProtocolSettings,
    SageMakerContainer,
    ServeSettings,
    TlsSettings,
    TracingSettings,
    environment,
    sagemaker_container,
    trust_pickle_from_environment,
)
from modelport.errors import InvalidInput


def test_serve_settings_are_composed_of_one_group_per_concern() -> None:
    settings = ServeSettings()
    assert settings.registry == ".modelport"
    groups = {f.name: type(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    assert groups == {
        "registry": str,
        "listen": ListenSettings,
        "limits": LimitSettings,
        "auth": AuthSettings,
        "browser": BrowserSettings,
        "tls": TlsSettings,
        "logging": LoggingSettings,
        "metrics": MetricsSettings,
        "tracing": TracingSettings,
        "inference_log": InferenceLogSettings,
        "models": ModelsSettings,
        "protocols": ProtocolSettings,
    }
    assert (settings.listen.host, settings.listen.http_port, settings.listen.grpc_port) == (
        "127.0.0.1",
        8080,
        8081,
    )
    assert settings.limits.request_timeout == 60.0
    assert settings.models.max_queue == 1024
    assert settings.models.overrides == {}


def test_every_group_is_frozen() -> None:
    settings = ServeSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.listen.http_port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.limits = LimitSettings()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ListenSettings(http_port=70000), "http_port must be 0-65535, got 70000"),
        (lambda: ListenSettings(grpc_port=-1), "grpc_port must be 0-65535 (0 turns gRPC off)"),
        (lambda: ListenSettings(workers=0), "workers must be between 1 and 256, got 0"),
        (lambda: LimitSettings(max_body_bytes=10), "max_body_bytes must be at least 1024"),
        (lambda: LimitSettings(max_batch=0), "max_batch must be at least 1, got 0"),
        (lambda: LimitSettings(request_timeout=-1), "request_timeout must not be negative"),
        (lambda: AuthSettings(rate_burst=-1), "rate_limit and rate_burst must not be negative"),
        (lambda: TlsSettings(cert="c.pem"), "TLS needs both tls_cert and tls_key"),
        (lambda: TlsSettings(client_ca="ca.pem"), "tls_client_ca (mutual TLS) needs TLS"),
        (lambda: LoggingSettings(level="loud"), "log_level must be one of debug, info"),
        (lambda: LoggingSettings(format="xml"), "log_format must be one of auto, json, text"),
        (lambda: MetricsSettings(port=-1), "metrics_port must be 0-65535, got -1"),
        (lambda: MetricsSettings(port=9, tls="https"), "metrics_tls must be one of mtls, tls"),
        (lambda: MetricsSettings(tls="plain"), "metrics_tls (--metrics-tls) applies to a metrics"),
        (lambda: TracingSettings(exporter="otlp"), "trace_exporter = otlp needs trace_endpoint"),
        (lambda: TracingSettings(exporter="zipkin"), "trace_exporter must be one of none"),
        (lambda: InferenceLogSettings(overflow="wait"), "inference_log_overflow must be one of"),
        (lambda: InferenceLogSettings(capacity=0), "inference_log_capacity must be at least 1"),
        (lambda: ModelsSettings(max_queue=0), "max_queue must be at least 1, got 0"),
        (lambda: ModelSettings(max_batch_size=0), "max_batch_size must be at least 1, got 0"),
        (lambda: ModelSettings(log_sample_rate=1.5), "log_sample_rate must be between 0 and 1"),
        (lambda: ModelSettings(max_batch_delay_ms=1001), "max_batch_delay_ms must be between"),
    ],
)
def test_each_group_checks_its_own_values_and_names_the_flat_key(
    build: object, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        build()  # type: ignore[operator]
    assert caught.value.message.startswith(message)


def test_the_environment_gives_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_REGISTRY", raising=False)
    assert environment() == {}
    monkeypatch.setenv("MODELPORT_REGISTRY", "/srv/registry")
    assert environment() == {"registry": "/srv/registry"}


TLS = TlsSettings(cert="c.pem", key="k.pem")
MUTUAL = TlsSettings(cert="c.pem", key="k.pem", client_ca="ca.pem")


@pytest.mark.parametrize(
    ("tls", "mode", "message"),
    [
        (TlsSettings(), "tls", "metrics_tls = tls needs TLS: add --tls-cert and --tls-key"),
        (TlsSettings(), "mtls", "metrics_tls = mtls needs TLS: add --tls-cert and --tls-key"),
        (TLS, "mtls", "metrics_tls = mtls needs client certificates: add --tls-client-ca"),
    ],
)
def test_the_metrics_port_tls_needs_the_files_it_serves_with(
    tls: TlsSettings, mode: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        ServeSettings(tls=tls, metrics=MetricsSettings(port=9100, tls=mode))
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(
    ("tls", "mode"),
    [
        (MUTUAL, "mtls"),
        (MUTUAL, "tls"),
        (MUTUAL, "plain"),
        (TLS, "tls"),
        (TLS, "plain"),
        (TlsSettings(), "plain"),
        (MUTUAL, ""),
        (TlsSettings(), ""),
    ],
)
def test_the_metrics_port_tls_may_ask_less_than_the_api(tls: TlsSettings, mode: str) -> None:
    settings = ServeSettings(tls=tls, metrics=MetricsSettings(port=9100, tls=mode))
    assert settings.metrics.tls == mode
    assert MetricsSettings().tls == ""  # not set: as the REST port


def test_browser_settings_take_names_and_origins() -> None:
    settings = BrowserSettings(
        allowed_hosts=("*", "models.example", "10.0.0.1", "::1", "[::1]"),
        cors_origins=("*", "https://app.example:8443", "http://localhost:3000/", "http://[::1]:1"),
    )
    assert settings.allowed_hosts[1] == "models.example"
    assert BrowserSettings().allowed_hosts == ()
    assert BrowserSettings().cors_origins == ()


@pytest.mark.parametrize("host", ["models.example:8080", "http://models.example", "", "a b"])
def test_allowed_hosts_are_names_without_a_port(host: str) -> None:
    with pytest.raises(InvalidInput, match="allowed_hosts takes host names"):
        BrowserSettings(allowed_hosts=(host,))


@pytest.mark.parametrize(
    "origin", ["app.example", "https://app.example/path", "ftp://app.example", "null", ""]
)
def test_cors_origins_are_scheme_host_and_port(origin: str) -> None:
    with pytest.raises(InvalidInput, match="cors_origins takes origins like"):
        BrowserSettings(cors_origins=(origin,))


def test_the_sagemaker_contract_applies_where_its_model_directory_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SAGEMAKER_MODEL_DIR_ENV, str(tmp_path / "missing"))
    monkeypatch.setenv(SAGEMAKER_PORT_ENV, "9090")
    assert sagemaker_container() is None
    monkeypatch.setenv(SAGEMAKER_MODEL_DIR_ENV, str(tmp_path))
    assert sagemaker_container() == SageMakerContainer(str(tmp_path), 9090)
    monkeypatch.delenv(SAGEMAKER_PORT_ENV)
    assert sagemaker_container() == SageMakerContainer(str(tmp_path), 8080)
    for bad in ("http", "0", "70000"):
        monkeypatch.setenv(SAGEMAKER_PORT_ENV, bad)
        with pytest.raises(InvalidInput, match="SAGEMAKER_BIND_TO_PORT must be a port number"):
            sagemaker_container()


def test_trusting_pickles_from_the_environment_takes_yes_or_no(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    assert trust_pickle_from_environment() is False
    for value, expected in (("1", True), ("TRUE", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(TRUST_PICKLE_ENV, value)
        assert trust_pickle_from_environment() is expected
    monkeypatch.setenv(TRUST_PICKLE_ENV, "maybe")
    with pytest.raises(InvalidInput, match="MODELPORT_TRUST_PICKLE must be 1 or 0"):
        trust_pickle_from_environment()


def test_vertex_ai_variables_give_the_port_and_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_REGISTRY", raising=False)
    monkeypatch.setenv("AIP_HTTP_PORT", "8085")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/health")
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/endpoints/7/deployedModels/9:predict")
    monkeypatch.setenv("AIP_DEPLOYED_MODEL_ID", "9")
    assert environment() == {
        "http_port": 8085,
        "vertex_health_route": "/health",
        "vertex_predict_route": "/v1/endpoints/7/deployedModels/9:predict",
        "vertex_deployed_model_id": "9",
    }
    monkeypatch.setenv("AIP_HTTP_PORT", "port")
    with pytest.raises(InvalidInput, match="AIP_HTTP_PORT must be a port number"):
        environment()


@pytest.mark.parametrize("route", ["predict", "/a/{b}", "/a?b", "//x", ""])
def test_protocol_routes_are_paths(route: str) -> None:
    with pytest.raises(InvalidInput, match="vertex_predict_route must be a URL path"):
        ProtocolSettings(vertex_predict_route=route)
