"""`[sinks.NAME]` in the models file: what a sink takes by default, and every mistake stops the
services at start with a message naming the file, the sink and the field."""

from __future__ import annotations

import pytest

from shared.catalog.models import parse_models
from shared.catalog.sinks import HttpSink, NatsSink
from shared.core.errors import ModelsFileError
from shared.wire.events import EVENT_TYPES

MODELS = '[models.m]\nengine = "dummy"\n'


def sinks(text: str):
    return parse_models(MODELS + text, "models.toml").sinks


def test_defaults():
    got = sinks(
        '[sinks.a]\nkind = "http"\nurl = "https://x.example/e"\n[sinks.b]\nkind = "nats"\nservers = ["nats://n:4222"]\n'
    )
    a, b = got["a"], got["b"]
    assert isinstance(a, HttpSink) and isinstance(b, NatsSink)
    assert (a.mode, a.types, a.tenants, a.start, a.batch_size) == ("structured", list(EVENT_TYPES), [], "earliest", 100)
    assert b.subjects() == [
        "inferq.job.cancelled",
        "inferq.job.completed",
        "inferq.job.deadline_at_risk",
        "inferq.job.expired",
        "inferq.job.failed",
        "inferq.request.completed",
    ]
    assert b.subject_for("job.completed") == "inferq.job.completed"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kind = "kafka"', "sink 'a': kind: unknown kind 'kafka'"),
        ('url = "https://x"', 'needs kind = "http" or kind = "nats"'),
        ('kind = "http"', "sink 'a': Object missing required field `url`"),
        ('kind = "http"\nurl = "ftp://x/e"', "url: must start with https://"),
        ('kind = "http"\nurl = "https://u:p@x/e"', "url: must not carry credentials"),
        ('kind = "http"\nurl = "https://x/e"\nmode = "bulk"', "mode: Invalid enum value 'bulk'"),
        ('kind = "http"\nurl = "https://x/e"\ntypes = ["job.done"]', "types[0]: Invalid enum value 'job.done'"),
        ('kind = "http"\nurl = "https://x/e"\ntypes = []', "types: empty"),
        ('kind = "http"\nurl = "https://x/e"\nbatch_size = 0', "batch_size: Expected `int` >= 1"),
        (
            'kind = "http"\nurl = "https://x/e"\nretry_initial_s = 9\nretry_max_s = 1',
            "retry_initial_s exceeds retry_max_s",
        ),
        ('kind = "http"\nurl = "https://x/e"\nheaders_env = { "ce-id" = "X" }', "headers_env: ['ce-id'] are set by"),
        ('kind = "http"\nurl = "https://x/e"\nheaders_env = { Authorization = "not a var" }', "headers_env"),
        ('kind = "http"\nurl = "https://x/e"\nsecret = "x"', "Object contains unknown field `secret`"),
        ('kind = "nats"\nservers = ["http://n"]', "servers[0]: Expected `str` matching regex"),
        ('kind = "nats"\nservers = []', "servers: Expected `array` of length >= 1"),
        ('kind = "nats"\nservers = ["nats://n"]\nsubject = "x.{kind}"', "subject: the only placeholder is {type}"),
        ('kind = "nats"\nservers = ["nats://n"]\nuser_env = "U"', "user_env and password_env go together"),
        ('kind = "nats"\nservers = ["nats://n"]\ncreds_file = "/c"\ntoken_env = "T"', "pick one"),
    ],
)
def test_mistakes_name_the_sink_and_the_field(table, message):
    with pytest.raises(ModelsFileError) as err:
        sinks("[sinks.a]\n" + table + "\n")
    assert message in str(err.value) and "models.toml" in str(err.value)


def test_sink_names_and_the_table_shape():
    with pytest.raises(ModelsFileError, match="sink 'a b': invalid name"):
        sinks('[sinks."a b"]\nkind = "http"\nurl = "https://x/e"\n')
    with pytest.raises(ModelsFileError, match=r"sinks must be a table of \[sinks.NAME\] tables"):
        parse_models('sinks = "x"\n' + MODELS)
    with pytest.raises(ModelsFileError, match=r"expected \[models.NAME\], \[tenants.NAME\] and \[sinks.NAME\]"):
        parse_models(MODELS + "[sink.a]\n")
