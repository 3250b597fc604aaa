"""The ``.raw`` recording: camera lines on disk, self-describing, append-only, crash-safe.

Layout (docs/recording-format.md has the byte tables)::

    file header   magic b"EIRAW\\r\\n\\x1a" | u16 version | u16 reserved | u32 json_len | JSON
                  | spaces up to the next multiple of 64 bytes
    block         64-byte header (b"EIBK", n_lines, first_line, encoder, timestamp_ns,
                  lost_before, flags, crc32, payload_bytes, reserved)
                  | payload n_lines x width x channels pixels (C order, little-endian)
                  | zeros up to the next multiple of 64 bytes
    block ...

``RecordingWriter`` appends one block per ``LineBlock`` and flushes after each, so a crash loses
at most the block being written.  ``RecordingReader`` maps the whole file with ``numpy.memmap``,
walks the 64-byte block headers once (payloads are not touched), and yields ``LineBlock``s whose
``lines`` are zero-copy views into the map.  ``open_recording`` also reads headerless raw dumps
from camera tools when the geometry is given.
"""

from .format import (
    ALIGN,
    BLOCK_MAGIC,
    FILE_MAGIC,
    FORMAT_VERSION,
    RecordingHeader,
    encode_file_header,
)
from .headerless import HeaderlessGeometry
from .reader import RecordingReader, open_recording
from .writer import RecordingWriter

__all__ = [
    "ALIGN",
    "BLOCK_MAGIC",
    "FILE_MAGIC",
    "FORMAT_VERSION",
    "HeaderlessGeometry",
    "RecordingHeader",
    "RecordingReader",
    "RecordingWriter",
    "encode_file_header",
    "open_recording",
]
