import gc

import pytest

from service import garbage_collection


@pytest.fixture
def restored_collector():
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()


def test_a_server_collects_nothing_while_it_starts_and_leaves_what_it_made_out_after(
    restored_collector,
):
    garbage_collection.pause_for_startup()
    assert not gc.isenabled()
    made_while_starting = [[] for _ in range(1000)]
    garbage_collection.tune_for_serving()

    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made_while_starting)
    assert gc.get_threshold()[0] > 700  # Python's default: young collections less often
