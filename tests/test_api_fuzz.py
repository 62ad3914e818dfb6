"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis),
against a running stack with auth on: no request, however malformed, gets a 5xx, and every
response has a documented status code, content type and body shape."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inferq.localstack import LocalStack

KEY = "fuzz-key-0123456789abcdef"
MODELS = """
[models.alpha]
engine = "dummy"
max_inflight = 64
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "models.toml"
    path.write_text(MODELS)
    env = {"INFERQ_AUTH": "on", "INFERQ_API_KEYS": f"fuzz:{KEY}", "INFERQ_MAX_BODY_BYTES": "1000000"}
    with LocalStack(path, workdir=path.parent / "stack", env=env) as running:
        yield running


@pytest.mark.parametrize("key, examples", [(KEY, 25), ("not-a-key", 3)], ids=["with a key", "without a valid key"])
def test_no_server_errors_and_responses_match_the_schema(stack, key, examples):
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(
                base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10, checks=checks
            )

        fuzz()
        tested.append(operation.label)
    assert len(tested) >= 25, tested  # every route was exercised
