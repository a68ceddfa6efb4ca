"""schemathesis against the gateway's own OpenAPI spec: generated requests get no 5xx answer."""

import hypothesis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.configuration import set_hypothesis_home_dir

EXAMPLES_PER_OPERATION = 12


def test_generated_requests_get_no_server_error(gateway, tmp_path):
    set_hypothesis_home_dir(tmp_path / "hypothesis")  # its caches stay out of the repository
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    failures: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # every route is in the spec

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def call(case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=gateway.url, timeout=30)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code} "
                    f"{response.text[:200]}"
                )

        call()
    assert calls >= 5 * len(operations)
    assert failures == []
    assert gateway.process.poll() is None
