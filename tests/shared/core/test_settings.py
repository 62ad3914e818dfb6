import pytest

from shared.core.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({})
    assert (s.redis_url, s.key_prefix, s.port, s.models_path) == (
        "redis://localhost:6379/0",
        "inferq",
        8000,
        "models.toml",
    )


def test_environment_overrides():
    s = Settings.from_env(
        {
            "INFERQ_REDIS_URL": "redis://r:1/2",
            "INFERQ_MODELS": "/m.toml",
            "INFERQ_KEY_PREFIX": "t1",
            "INFERQ_PORT": "9001",
        }
    )
    assert (s.redis_url, s.models_path, s.key_prefix, s.port) == ("redis://r:1/2", "/m.toml", "t1", 9001)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"INFERQ_PORT": "http"}, "INFERQ_PORT='http' is not a valid int"),
        ({"INFERQ_PORT": "0"}, "INFERQ_PORT must be positive"),
        ({"INFERQ_KEY_PREFIX": "a:b"}, "INFERQ_KEY_PREFIX"),
    ],
)
def test_bad_values_are_named(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"INFERQ_PORT": "70000"}, "INFERQ_PORT must be positive .*at most 65535.*'70000'"),
        ({"INFERQ_METRICS_PORT": "-1"}, "INFERQ_METRICS_PORT must be 0 \\(off\\) or a TCP port"),
        ({"INFERQ_RECLAIM_IDLE_S": "0"}, "INFERQ_RECLAIM_IDLE_S must be positive, not '0'"),
        ({"INFERQ_SHUTDOWN_GRACE_S": "-1"}, "INFERQ_SHUTDOWN_GRACE_S must be zero or more"),
        ({"INFERQ_TENANT_RATE": "-0.5"}, "INFERQ_TENANT_RATE must be zero or more"),
        ({"INFERQ_EVENTS_MAXLEN": "10"}, "INFERQ_EVENTS_MAXLEN must be at least 1000"),
        ({"INFERQ_AUTH": "maybe"}, "INFERQ_AUTH must be `on` or `off`, not 'maybe'"),
        ({"INFERQ_REDIS_URL": "localhost:6379"}, "INFERQ_REDIS_URL must be a redis://"),
        (
            {"INFERQ_WEBHOOK_RETRY_SCHEDULE": "0,-5"},
            "INFERQ_WEBHOOK_RETRY_SCHEDULE must be comma-separated non-negative seconds",
        ),
        ({"INFERQ_WEBHOOK_TIMEOUT_S": "fast"}, "INFERQ_WEBHOOK_TIMEOUT_S='fast' is not a valid float"),
        ({"INFERQ_WEBHOOK_ALLOW_HTTP": "maybe"}, "INFERQ_WEBHOOK_ALLOW_HTTP='maybe' is not a valid bool"),
        ({"INFERQ_MODAL_APP": ""}, None),  # empty means unset: the default stands
        ({"INFERQ_API_KEYS": "acme:short"}, "INFERQ_API_KEYS: expected `tenant:key` pairs"),
    ],
)
def test_constraints_name_the_variable(env, message):
    if message is None:
        assert Settings.from_env(env) == Settings.from_env({})
        return
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_every_spelling_of_yes_and_no():
    for word, value in (("1", True), ("Yes", True), ("on", True), ("0", False), ("no", False), ("OFF", False)):
        assert Settings.from_env({"INFERQ_WEBHOOK_ALLOW_HTTP": word}).webhook_allow_http is value


def test_deployment_variables_are_settings_too():
    s = Settings.from_env(
        {
            "INFERQ_MODAL_APP": "inferq-staging",
            "INFERQ_LOCAL_WORKER_LOG_DIR": "/tmp/w",
            "INFERQ_MODAL_HF_SECRET": "huggingface",
            "INFERQ_TENANT_RATE": "2.5",
        }
    )
    assert (s.modal_app, s.local_worker_log_dir, s.modal_hf_secret, s.modal_redis_secret, s.tenant_rate) == (
        "inferq-staging",
        "/tmp/w",
        "huggingface",
        "inferq-redis",
        2.5,
    )
