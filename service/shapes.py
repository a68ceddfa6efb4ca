"""How a sent tensor's shape relates to the shape a signature declares: the one rule the gateway
and the model server share.

A declared shape is a tuple of dims, each a size or None (unknown; TensorFlow's -1), or None as a
whole for an unknown rank. A sent shape is `compatible` when it has the declared rank and every
known size. It `matches_up_to_size_one` when the two agree once size-1 dims are dropped from both,
an unknown declared dim standing for any size or for a dropped 1: TF Serving feeds a [3] tensor to
half_plus_two's [-1, 1] input, and so may we, if the graph takes it.
"""

from collections.abc import Sequence

Shape = Sequence[int]
Declared = Sequence[int | None] | None


def text(shape: Declared) -> str:
    """A shape as messages show it: [-1, 8, 8, 1], or "any shape" for an unknown rank."""
    if shape is None:
        return "any shape"
    return "[" + ", ".join("-1" if dim is None else str(dim) for dim in shape) + "]"


def compatible(shape: Shape, declared: Declared) -> bool:
    if declared is None:
        return True
    return len(shape) == len(declared) and all(
        want is None or want == have for have, want in zip(shape, declared, strict=True)
    )


def matches_up_to_size_one(shape: Shape, declared: Declared) -> bool:
    return declared is None or _size_one_alignment(shape, declared) is not None


def restored(shape: Shape, declared: Declared) -> tuple[int, ...] | None:
    """The declared form of a shape that matches it up to size-1 dims (same elements, in the
    same order, with size-1 dims put in or taken out), or None if it does not match."""
    if declared is None:
        return tuple(shape)
    alignment = _size_one_alignment(shape, declared)
    if alignment is None:
        return None
    return tuple(1 if size is None else size for size in alignment)


def check_key(shape: Shape, declared: Declared) -> tuple[int | None, ...]:
    """What checking a sent shape against a graph depends on: its rank, its 1s, and its sizes
    where the signature declares a size (at the same place when the ranks agree, anywhere when
    they do not); other sizes become unknown. Shapes that differ only in free sizes (a batch of 3
    or of 4) get one answer, so a cache of answers keyed on this stays small."""
    if declared is not None and len(declared) == len(shape):
        return tuple(
            have if want is not None or have == 1 else None
            for have, want in zip(shape, declared, strict=True)
        )
    known = set() if declared is None else {dim for dim in declared if dim is not None}
    return tuple(size if size == 1 or size in known else None for size in shape)


def _size_one_alignment(shape: Shape, declared: Sequence[int | None]) -> list[int | None] | None:
    """The declared dims with each unknown one filled by the sent size it stands for (None where
    it stands for a dropped 1), if the shapes match up to size-1 dims."""
    sent = [size for size in shape if size != 1]
    wanted = [dim for dim in declared if dim != 1]
    # reachable[i][j]: sent[:i] and wanted[:j] match. An unknown wanted dim takes one sent size
    # or none; a known one must equal the next sent size. Iterative: ranks reach 254.
    rows, columns = len(sent) + 1, len(wanted) + 1
    reachable = [[False] * columns for _ in range(rows)]
    reachable[0][0] = True
    for i in range(rows):
        for j in range(1, columns):
            want = wanted[j - 1]
            takes_one = i > 0 and reachable[i - 1][j - 1] and want in (None, sent[i - 1])
            reachable[i][j] = takes_one or (want is None and reachable[i][j - 1])
    if not reachable[-1][-1]:
        return None
    # Walk back to see which unknown dims took a size; a later one gives its size up first,
    # so that [3] for [-1, -1] reads as [3, 1] (batch first).
    filled: dict[int, int | None] = {}
    i, j = len(sent), len(wanted)
    while j > 0:
        if wanted[j - 1] is None and reachable[i][j - 1]:
            filled[j - 1] = None
        else:
            filled[j - 1] = sent[i - 1]
            i -= 1
        j -= 1
    fills = iter(filled[index] for index in range(len(wanted)))
    return [1 if dim == 1 else next(fills) for dim in declared]
