"""Flat sources to grouped settings: the config file, the environment, flags, help defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelport.cli import main
from modelport.config import LimitSettings, ModelSettings, ServeSettings
from modelport.config_loader import (
    build_serve_settings,
    load_config_file,
    registry_given,
    serve_default,
    serve_keys,
    shown_default,
)
from modelport.errors import InvalidInput
from modelport.model_policy import (
    DEFAULT_LOG_SAMPLE_RATE,
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_MAX_BATCH_SIZE,
)

FLAT_KEYS = [
    "access_log",
    "allow_insecure",
    "allowed_hosts",
    "azure_liveness_route",
    "azure_model",
    "azure_readiness_route",
    "azure_scoring_route",
    "batching",
    "compiled",
    "cors_origins",
    "grpc_port",
    "host",
    "http_port",
    "inference_log",
    "inference_log_capacity",
    "inference_log_journal",
    "inference_log_overflow",
    "jwks_file",
    "jwt_audience",
    "jwt_issuer",
    "jwt_public_key",
    "jwt_scope_claim",
    "log_format",
    "log_level",
    "max_batch",
    "max_body_bytes",
    "max_elements",
    "max_queue",
    "metrics",
    "metrics_port",
    "metrics_tls",
    "models",
    "rate_burst",
    "rate_limit",
    "registry",
    "request_timeout",
    "require_auth",
    "tls_cert",
    "tls_client_ca",
    "tls_key",
    "trace_endpoint",
    "trace_exporter",
    "vertex_deployed_model_id",
    "vertex_health_route",
    "vertex_model",
    "vertex_predict_route",
    "workers",
]

REPEATABLE = ("models", "allowed_hosts", "cors_origins")


@pytest.fixture(autouse=True)
def no_registry_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_REGISTRY", raising=False)


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "modelport.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        build_serve_settings({}, config(tmp_path, text))
    return caught.value.message


def test_the_flat_keys_are_those_of_the_serve_table() -> None:
    assert sorted(serve_keys()) == FLAT_KEYS


def test_each_flat_key_lands_in_its_group(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        '[serve]\nhttp_port = 9000\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
        'inference_log = "off"\ninference_log_journal = "j"\ntrace_exporter = "console"\n'
        'metrics = false\nmetrics_port = 9100\nmodels = ["iris"]\nlog_level = "debug"\n'
        "max_queue = 3\nrate_limit = 2\nrequest_timeout = 5\nworkers = 2\n",
    )
    settings = build_serve_settings({}, path)
    assert settings.listen.http_port == 9000
    assert settings.listen.workers == 2
    assert (settings.tls.cert, settings.tls.key, settings.tls.client_ca) == ("c.pem", "k.pem", "")
    assert (settings.inference_log.location, settings.inference_log.journal) == ("off", "j")
    assert settings.tracing.exporter == "console"
    assert (settings.metrics.enabled, settings.metrics.port) == (False, 9100)
    assert settings.models.selection == ("iris",)
    assert settings.models.max_queue == 3
    assert settings.logging.level == "debug"
    assert settings.auth.rate_limit == 2.0
    assert settings.limits.request_timeout == 5.0
    # What the file does not set keeps its default.
    assert settings.listen.grpc_port == 8081
    assert settings.limits == LimitSettings(request_timeout=5.0)


def test_defaults_then_file_then_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert build_serve_settings({}) == ServeSettings()
    path = config(tmp_path, '[serve]\nregistry = "from-file"\nhttp_port = 9000\n')
    assert build_serve_settings({}, path).registry == "from-file"
    monkeypatch.setenv("MODELPORT_REGISTRY", "from-env")
    assert build_serve_settings({}, path).registry == "from-env"
    flags = {"registry": "from-flag", "http_port": None, "grpc_port": 0}
    settings = build_serve_settings(flags, path)
    assert settings.registry == "from-flag"
    assert settings.listen.http_port == 9000  # a flag that is None is not given
    assert settings.listen.grpc_port == 0


def test_a_platform_sits_above_the_file_and_below_environment_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config(tmp_path, '[serve]\nhttp_port = 9000\nhost = "127.0.0.2"\n')
    platform = {"http_port": 9100, "host": "0.0.0.0", "registry": "from-platform"}
    settings = build_serve_settings({}, path, platform=platform)
    assert (settings.listen.http_port, settings.listen.host) == (9100, "0.0.0.0")
    monkeypatch.setenv("MODELPORT_REGISTRY", "from-env")
    settings = build_serve_settings({"http_port": 9200}, path, platform=platform)
    assert (settings.listen.http_port, settings.registry) == (9200, "from-env")


def test_a_registry_is_given_by_a_flag_the_environment_or_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPORT_REGISTRY", raising=False)
    plain = config(tmp_path, "[serve]\nhttp_port = 9000\n")
    assert not registry_given({"registry": None}, plain)
    assert registry_given({"registry": "r"})
    assert registry_given({}, config(tmp_path, '[serve]\nregistry = "r"\n'))
    monkeypatch.setenv("MODELPORT_REGISTRY", "r")
    assert registry_given({})


def test_model_tables_become_overrides(tmp_path: Path) -> None:
    path = config(
        tmp_path, '[models.iris]\nmax_batch_size = 8\nmax_batch_delay_ms = 1\nlog_redact = ["a"]\n'
    )
    settings = build_serve_settings({}, path)
    assert settings.models.overrides == {
        "iris": ModelSettings(max_batch_size=8, max_batch_delay_ms=1.0, log_redact=("a",))
    }


def test_workers_in_the_file_may_be_auto(tmp_path: Path) -> None:
    assert build_serve_settings({}, config(tmp_path, '[serve]\nworkers = "auto"\n')).listen.workers
    assert refused(tmp_path, '[serve]\nworkers = "x"\n') == (
        "workers must be a number or 'auto', got 'x'"
    )


def test_unknown_keys_and_tables_are_refused_with_what_is_known(tmp_path: Path) -> None:
    message = refused(tmp_path, "[serve]\nflavour = 1\n")
    assert message == (f"unknown setting(s) in [serve]: flavour; known: {', '.join(FLAT_KEYS)}")
    assert refused(tmp_path, "[models.a]\nflavour = 2\n") == (
        "unknown setting(s) in [models.a]: flavour; known: batching, compiled, log_redact, "
        "log_sample_rate, max_batch_delay_ms, max_batch_size, max_queue"
    )
    # A group's field name is not a key: the flat name is.
    assert refused(tmp_path, '[serve]\ncert = "c.pem"\n').startswith(
        "unknown setting(s) in [serve]: cert;"
    )
    assert refused(tmp_path, "[x]\n") == (
        "unknown table(s) x in the config file; use [serve] and [models.NAME]"
    )
    assert refused(tmp_path, "serve = 1\n") == "the config file's [serve] entry must be a table"
    assert refused(tmp_path, "[models]\na = 1\n") == "[models.a] must be a table of settings"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[serve]\nhttp_port = "8080"\n',
            "setting 'http_port' in [serve] must be an integer, got '8080'",
        ),
        ("[serve]\nmodels = [1]\n", "setting 'models' in [serve] must be a list of strings"),
        ("[serve]\nbatching = 1\n", "setting 'batching' in [serve] must be true or false, got 1"),
        (
            "[serve]\nrequest_timeout = true\n",
            "setting 'request_timeout' in [serve] must be a number, got True",
        ),
        ("[serve]\ntls_cert = 1\n", "setting 'tls_cert' in [serve] must be a string, got 1"),
        (
            '[models.a]\nbatching = "yes"\n',
            "setting 'batching' in [models.a] must be true or false, got 'yes'",
        ),
        (
            '[models.a]\nlog_redact = "a"\n',
            "setting 'log_redact' in [models.a] must be a list of strings",
        ),
        (
            '[serve]\nlog_level = "verbose"\n',
            "log_level must be one of debug, info, warning, error, got 'verbose'",
        ),
        ("[models.a]\nlog_sample_rate = 2\n", "log_sample_rate must be between 0 and 1, got 2.0"),
    ],
)
def test_type_and_value_errors_name_the_flat_key(tmp_path: Path, text: str, message: str) -> None:
    assert refused(tmp_path, text) == message


def test_an_unreadable_or_invalid_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"cannot read config file 'missing\.toml'"):
        load_config_file(tmp_path / "missing.toml")
    with pytest.raises(InvalidInput, match=r"config file 'modelport\.toml' is not valid TOML"):
        load_config_file(config(tmp_path, "[serve\n"))


def test_defaults_as_help_states_them() -> None:
    assert serve_default("http_port") == 8080
    assert serve_default("models") == ()
    assert shown_default("http_port") == "8080"
    assert shown_default("request_timeout") == "60"
    assert shown_default("batching").startswith("on")
    assert shown_default("require_auth") == "off"
    assert shown_default("inference_log_capacity") == "1000000"
    assert shown_default("tls_cert") == ""  # nothing to state


def test_serve_help_shows_each_default_the_settings_state() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=10_000)
    assert result.exit_code == 0, result.output
    helps = dict(re.findall(r"^\s+(--[\w-]+)(?:[ /][^\n]*?)?\s{2,}(.*)$", result.output, re.M))
    checked = 0
    for key in serve_keys():
        # A repeatable option is named in the singular: --model, --allowed-host, ...
        flag = "--" + key.removesuffix("s").replace("_", "-") if key in REPEATABLE else ""
        flag = flag or "--" + key.replace("_", "-")
        if flag not in helps:
            # Config-file settings without a flag: the body limit, and where the cloud
            # platforms' protocols answer (Vertex AI also sets those by environment).
            assert key == "max_body_bytes" or key.startswith(("vertex_", "azure_")), key
            continue
        shown = shown_default(key)
        if shown:
            assert helps[flag].endswith(f"Default: {shown}" + ("" if key == "registry" else "."))
            checked += 1
        else:
            assert "Default:" not in helps[flag], flag
    assert checked >= 25
    assert "Default: 8080." in helps["--http-port"]
    assert helps["--registry"].endswith("Default: $MODELPORT_REGISTRY, else ./.modelport")


DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_the_configuration_page_states_the_settings_defaults() -> None:
    rows = re.findall(
        r"^\| [^|]*(?:\\\|[^|]*)* \| `(\w+)`[^|]* \| ([^|]+) \|", DOCS.read_text(), re.M
    )
    documented = dict(rows)
    assert set(documented) == set(FLAT_KEYS)
    for key, cell in documented.items():
        value = serve_default(key)
        literal = re.match(r"`([^`]*)`", cell)
        if key == "registry":
            assert cell.replace("`", "").strip() == shown_default(key)
        elif isinstance(value, bool):
            assert cell.strip() == ("on" if value else "off"), key
        elif literal and isinstance(value, int | float):
            assert float(literal.group(1)) == value, key
        elif literal and isinstance(value, str) and value:
            assert literal.group(1) == value, key
    # The per-model defaults in the [models.NAME] example.
    text = DOCS.read_text()
    assert f"(default {DEFAULT_MAX_BATCH_SIZE};" in text
    assert f"(default {DEFAULT_MAX_BATCH_DELAY_MS:g}; 0 = never)" in text
    assert f"(default {DEFAULT_LOG_SAMPLE_RATE:g})" in text


def test_metrics_tls_from_a_flag_or_the_file(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        '[serve]\ntls_cert = "c.pem"\ntls_key = "k.pem"\nmetrics_port = 9100\n'
        'metrics_tls = "plain"\n',
    )
    assert build_serve_settings({}, path).metrics.tls == "plain"
    assert build_serve_settings({"metrics_tls": "tls"}, path).metrics.tls == "tls"
    assert "metrics_tls = mtls needs client certificates" in refused(
        tmp_path, '[serve]\ntls_cert = "c"\ntls_key = "k"\nmetrics_port = 1\nmetrics_tls = "mtls"\n'
    )


def test_browser_keys_land_in_their_group_and_flags_win(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        '[serve]\nallowed_hosts = ["models.example"]\ncors_origins = ["https://app.example"]\n',
    )
    settings = build_serve_settings({}, path)
    assert settings.browser.allowed_hosts == ("models.example",)
    assert settings.browser.cors_origins == ("https://app.example",)
    flagged = build_serve_settings({"allowed_hosts": ("a.example", "b.example")}, path)
    assert flagged.browser.allowed_hosts == ("a.example", "b.example")
    assert "allowed_hosts takes host names" in refused(
        tmp_path, '[serve]\nallowed_hosts = ["a.example:80"]\n'
    )
