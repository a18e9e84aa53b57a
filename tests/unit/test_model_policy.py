"""One model's policy: settings, then registry metadata, then default; bad values refused."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.config import ModelSettings, ModelsSettings
from modelport.errors import InvalidInput
from modelport.model_policy import (
    DEFAULT_LOG_SAMPLE_RATE,
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_MAX_BATCH_SIZE,
    ModelPolicy,
    model_policy,
)
from modelport.serving.batching import DEFAULT_BATCH_DELAY, BatchPolicy

SERVER = ModelsSettings()


def with_overrides(**settings: Any) -> ModelsSettings:
    return ModelsSettings(overrides={"iris": ModelSettings(**settings)})


def test_defaults_without_settings_or_metadata() -> None:
    policy = model_policy(SERVER, "iris", {})
    assert policy == ModelPolicy(compiled=True, max_queue=1024)
    assert policy.batching is None  # the runtime decides
    assert policy.max_batch_size == DEFAULT_MAX_BATCH_SIZE == 64
    assert policy.max_batch_delay_ms == DEFAULT_MAX_BATCH_DELAY_MS == 2.0
    assert policy.log_sample_rate == DEFAULT_LOG_SAMPLE_RATE == 1.0
    assert policy.log_redact == frozenset()
    # The batcher's own defaults are the same ones, stated once.
    assert BatchPolicy() == BatchPolicy(64, 0.002)
    assert DEFAULT_BATCH_DELAY == DEFAULT_MAX_BATCH_DELAY_MS / 1000


def test_metadata_wins_over_the_default() -> None:
    metadata = {
        "max_batch_size": "16",
        "max_batch_delay_ms": "2.5",
        "batching": "yes",
        "log_sample_rate": "0.25",
        "log_redact": "input-0, predict",
    }
    policy = model_policy(SERVER, "iris", metadata)
    assert policy.max_batch_size == 16
    assert policy.max_batch_delay_ms == 2.5
    assert policy.batching is True
    assert policy.log_sample_rate == 0.25
    assert policy.log_redact == {"input-0", "predict"}
    assert model_policy(SERVER, "iris", {"batching": "off"}).batching is False
    assert model_policy(SERVER, "iris", {"log_redact": ["a", "b"]}).log_redact == {"a", "b"}


def test_settings_win_over_metadata_and_redaction_adds_up() -> None:
    models = with_overrides(
        max_batch_size=8, max_batch_delay_ms=0, log_sample_rate=0.5, log_redact=("ssn",)
    )
    metadata = {"max_batch_size": "16", "log_sample_rate": "0.1", "log_redact": "input-0"}
    policy = model_policy(models, "iris", metadata)
    assert (policy.max_batch_size, policy.max_batch_delay_ms) == (8, 0.0)
    assert policy.log_sample_rate == 0.5
    assert policy.log_redact == {"ssn", "input-0"}
    # Overrides are per model.
    assert model_policy(models, "other", metadata).max_batch_size == 16


def test_server_settings_give_compiled_queue_and_batching() -> None:
    server = ModelsSettings(compiled=False, max_queue=7, batching=False)
    policy = model_policy(server, "iris", {"batching": "true"})
    assert (policy.compiled, policy.max_queue, policy.batching) == (False, 7, False)
    models = ModelsSettings(
        compiled=False, max_queue=7, overrides={"iris": ModelSettings(compiled=True, max_queue=2)}
    )
    assert model_policy(models, "iris", {}).compiled is True
    assert model_policy(models, "iris", {}).max_queue == 2
    # --no-batching wins over a model's own opt-in, too.
    off = ModelsSettings(batching=False, overrides={"iris": ModelSettings(batching=True)})
    assert model_policy(off, "iris", {}).batching is False


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"max_batch_size": "many"}, "max_batch_size must be an integer, got 'many'"),
        ({"max_batch_size": "0"}, "max_batch_size must be at least 1, got 0"),
        ({"batching": "sometimes"}, "batching must be true or false, got 'sometimes'"),
        (
            {"max_batch_delay_ms": "5000"},
            "max_batch_delay_ms must be between 0 and 1000, got 5000.0",
        ),
        ({"log_sample_rate": "often"}, "log_sample_rate must be a number, got 'often'"),
        ({"log_sample_rate": "1.5"}, "log_sample_rate must be between 0 and 1, got 1.5"),
        ({"log_sample_rate": "-0.1"}, "log_sample_rate must be between 0 and 1, got -0.1"),
        (
            {"log_redact": 3},
            "log_redact must be a list of names or a comma-separated string, got 3",
        ),
    ],
)
def test_a_bad_metadata_value_is_refused_naming_key_value_and_what_is_allowed(
    metadata: dict[str, Any], problem: str
) -> None:
    """One rule for every per-model value: no clamping, no silent default."""
    with pytest.raises(InvalidInput) as caught:
        model_policy(SERVER, "iris", metadata)
    key = next(iter(metadata))
    assert caught.value.message == (
        f"registry metadata of model 'iris' is not valid: {problem}; push a version with a "
        f"valid `--meta {key}=...`, or set {key} in [models.iris] of the config file"
    )


def test_a_setting_overrides_a_bad_metadata_value() -> None:
    models = with_overrides(log_sample_rate=0.5, max_batch_size=4)
    policy = model_policy(models, "iris", {"log_sample_rate": "often", "max_batch_size": "x"})
    assert (policy.log_sample_rate, policy.max_batch_size) == (0.5, 4)


def test_unrelated_metadata_is_not_read() -> None:
    assert model_policy(SERVER, "iris", {"owner": "team-a", "compiled": "nonsense"}) == (
        model_policy(SERVER, "iris", {})
    )
