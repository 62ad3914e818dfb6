import pytest

from shared.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({})
    assert (s.redis_url, s.key_prefix, s.port, s.models_path) == ("redis://localhost:6379/0", "inferq", 8000, "models.toml")


def test_environment_overrides():
    s = Settings.from_env({"INFERQ_REDIS_URL": "redis://r:1/2", "INFERQ_MODELS": "/m.toml", "INFERQ_KEY_PREFIX": "t1", "INFERQ_PORT": "9001"})
    assert (s.redis_url, s.models_path, s.key_prefix, s.port) == ("redis://r:1/2", "/m.toml", "t1", 9001)


@pytest.mark.parametrize("env, message", [
    ({"INFERQ_PORT": "http"}, "INFERQ_PORT='http' is not a valid int"),
    ({"INFERQ_PORT": "0"}, "INFERQ_PORT must be positive"),
    ({"INFERQ_KEY_PREFIX": "a:b"}, "INFERQ_KEY_PREFIX"),
])
def test_bad_values_are_named(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
