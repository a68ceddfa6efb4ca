"""Image files for upload tests, written by hand where they must be malformed or huge."""

import io
import struct
import zlib

from PIL import Image


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, *extra_chunks: bytes) -> bytes:
    """A real PNG of black pixels, written by hand so it can be far larger than it is heavy."""
    rows = zlib.compress(b"\x00" * (width + 1) * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + b"".join(extra_chunks)
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )


def inflating_to(size: int) -> bytes:
    """zlib data of `size` bytes that is some 1000 times smaller."""
    return zlib.compress(b"a" * size, 9)


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("L", (16, 16)).save(out, format="JPEG")
    return out.getvalue()
