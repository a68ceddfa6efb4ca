"""One model server and one gateway for the promotion tests: each test adds its own models to the
shared model config file, so the tests do not depend on one another."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from promotion.stack import Stack, start_stack
from savedmodels import write_half_plus_two
from support import stop

OFFSETS = (2.0, 10.0, 20.0)


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> dict[float, Path]:
    """A half_plus_two version folder for each offset (copied, never changed)."""
    base = tmp_path_factory.mktemp("half-plus-offsets")
    return {
        offset: write_half_plus_two(base, f"offset-{offset:g}", offset) / f"offset-{offset:g}"
        for offset in OFFSETS
    }


@pytest.fixture(scope="session")
def stack(saved_models, tmp_path_factory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("promotion"), saved_models)
    try:
        yield started
    finally:
        stop(started.gateway)
        stop(started.model_server)
