import pytest

from shared.models_config import ModelsFileError, load_models, parse_models


def test_entries_are_parsed_with_defaults(models):
    assert models.names() == ["alpha", "beta", "gamma"]
    gamma = models.get("gamma")
    assert gamma.name == "gamma" and gamma.max_inflight == 16 and gamma.max_tokens_limit == 100
    assert gamma.engine_options().latency_ms == 2
    assert gamma.scaling.backend == "static"


def test_example_models_file_is_valid():
    from tests.conftest import ROOT

    assert len(load_models(ROOT / "examples/models.local.toml").names()) >= 3


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[models.a]\nengine = "dummy"\nmax_inflight = 0', "model 'a': max_inflight: Expected `int` >= 1"),
        ('[models.a]\nengine = "gpt"', "model 'a': unknown engine 'gpt'; known engines: ['dummy', 'openai', 'transformers', 'vllm']"),
        ('[models.a]\nengine = "transformers"', "model 'a': engine 'transformers' options: Object missing required field `model`"),
        ('[models.a]\nengine = "openai"\noptions = {base_url = "ftp://x"}', "model 'a': engine 'openai' options: base_url: Expected `str` matching regex '^https?://'"),
        ('[models.a]\nengine = "dummy"\nmax_inflihgt = 3', "model 'a': Object contains unknown field `max_inflihgt`"),
        ('[models.a]\nengine = "dummy"\n[models.a.options]\nlatency = 3', "model 'a': engine 'dummy' options: Object contains unknown field `latency`"),
        ('[models.ok]\nengine = "dummy"\n[models.b]\nmax_inflight = 3', "model 'b': Object missing required field `engine`"),
        ('[models."bad name"]\nengine = "dummy"', "model 'bad name': invalid name"),
        ('[models.a]\nengine = "dummy"\n[models.a.scaling]\nmin_replicas = 3\nmax_replicas = 2', "model 'a': scaling.min_replicas exceeds"),
        ("models = 3", "no models defined"),
        ("[other]\nx = 1", "unknown top-level key(s) ['other']"),
        ("[models.a\n", "not valid TOML"),
    ],
)
def test_malformed_file_names_the_entry(text, expected):
    with pytest.raises(ModelsFileError) as info:
        parse_models(text, "m.toml")
    assert str(info.value).startswith("models file m.toml")
    assert expected in str(info.value)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ModelsFileError, match="not found .*INFERQ_MODELS"):
        load_models(tmp_path / "nope.toml")
