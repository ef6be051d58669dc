"""Property-based fuzzing of the OpenAPI document with schemathesis, with and without credentials.

Every operation; no response may be a 5xx, and every one must match the documented status codes,
content types, headers and schemas. Bounded: a few examples per operation. Not checked: that
every schema-valid body is accepted, since some rules span fields and cannot be written in JSON
Schema (columns of equal length, features an assessment needs for its lifecycle group, alert
transitions allowed from the current status); those answer a documented 409/413/422.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from tests.db_support import migrated_sqlite_database

# Without credentials every operation must answer 401 whatever the request: a few suffice.
EXAMPLES = {"with": 12, "without": 3}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fuzzed_app(settings_for: Any, registry: ModelRegistry) -> Iterator[tuple[FastAPI, str]]:
    """An authenticated app on its own database, running, and an all-scopes key."""
    with migrated_sqlite_database() as url:
        # A generous limit: the fuzzer must reach the handlers, not the rate limiter.
        settings = settings_for(url, auth_enabled=True, rate_limit_per_s=10_000.0)
        app = create_app(settings, registry)
        _, key = create_client(app.state.engine, name="fuzz", scopes=sorted(ALL_SCOPES))
        # schemathesis's ASGI client starts the app's lifespan on its first call.
        yield app, key


def _run(case_strategy: Any, check: Any, examples: int) -> None:
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case_strategy)
    def fuzz(case: Case[Any]) -> None:
        check(case)

    fuzz()


@pytest.mark.parametrize("credentials", ["with", "without"])
def test_every_operation_survives_fuzzing(
    fuzzed_app: tuple[FastAPI, str], credentials: str
) -> None:
    app, key = fuzzed_app
    headers = {"X-API-Key": key}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 12
    sent = headers if credentials == "with" else None
    statuses: set[int] = set()

    def check(case: Case[Any]) -> None:
        response = case.call_and_validate(headers=sent, excluded_checks=[positive_data_acceptance])
        statuses.add(response.status_code)

    for operation in operations:
        _run(operation.as_strategy(), check, EXAMPLES[credentials])
    assert all(status < 500 for status in statuses)
    if credentials == "without":
        assert statuses <= {200, 401}  # only the public probes answer
