"""The shape rule the gateway and the model server share (service/shapes.py)."""

import pytest

from service import shapes

DIGITS = (None, 8, 8, 1)
HALF_PLUS_TWO = (None, 1)


@pytest.mark.parametrize(
    ("shape", "declared", "compatible", "restored"),
    [
        ((2, 8, 8, 1), DIGITS, True, (2, 8, 8, 1)),
        ((0, 8, 8, 1), DIGITS, True, (0, 8, 8, 1)),
        ((8, 8), DIGITS, False, (1, 8, 8, 1)),  # one digit without batch or channel
        ((2, 8, 8), DIGITS, False, (2, 8, 8, 1)),
        ((1, 1, 8, 8, 1), DIGITS, False, (1, 8, 8, 1)),
        ((2, 8, 8, 3), DIGITS, False, None),
        ((2, 8, 4), DIGITS, False, None),
        ((3,), HALF_PLUS_TWO, False, (3, 1)),  # TF Serving's own REST test
        ((), HALF_PLUS_TWO, False, (1, 1)),
        ((3, 2), HALF_PLUS_TWO, False, None),
        ((3,), (None, None), False, (3, 1)),  # batch first when unknown dims could take it
        ((1, 3), (3,), False, (3,)),  # a size-1 dim taken out
        ((5, 7), None, True, (5, 7)),  # an unknown rank takes any shape
    ],
)
def test_compatible_and_restored(shape, declared, compatible, restored):
    assert shapes.compatible(shape, declared) is compatible
    assert shapes.restored(shape, declared) == restored
    assert shapes.matches_up_to_size_one(shape, declared) is (restored is not None)


def test_a_restored_shape_keeps_the_elements():
    for shape, declared in (((8, 8), DIGITS), ((3,), HALF_PLUS_TWO), ((1, 3, 1), (3,))):
        restored = shapes.restored(shape, declared)
        assert shapes.compatible(restored, declared)
        assert [size for size in restored if size != 1] == [size for size in shape if size != 1]


def test_restoring_a_tensor_of_the_highest_rank_is_quick():
    # Ranks reach 254: the matching is a table, not a search through every way to align.
    shape, declared = (1,) * 127 + (5,) + (1,) * 126, (None,) * 254
    assert shapes.restored(shape, declared) == (5,) + (1,) * 253


@pytest.mark.parametrize(
    ("shape", "declared", "key"),
    [
        ((3, 8, 8, 1), DIGITS, (None, 8, 8, 1)),  # any batch size gets one answer
        ((3, 8, 8, 2), DIGITS, (None, 8, 8, 2)),  # a wrong declared size stays visible
        ((3, 8, 8), DIGITS, (None, 8, 8)),
        ((1, 8, 8), DIGITS, (1, 8, 8)),
        ((4, 7), None, (None, None)),
        ((1, 7), None, (1, None)),
    ],
)
def test_check_key_keeps_what_a_shape_check_depends_on(shape, declared, key):
    assert shapes.check_key(shape, declared) == key


def test_text():
    assert shapes.text(DIGITS) == "[-1, 8, 8, 1]"
    assert shapes.text((2, 8, 8)) == "[2, 8, 8]"
    assert shapes.text(None) == "any shape"
