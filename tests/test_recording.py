"""The .raw recording format: round trips, lost lines, truncation, corruption, headerless dumps.

Files are written with RecordingWriter, then damaged with plain byte edits where a test needs it;
layout checks re-parse the bytes with struct alone, as docs/recording-format.md describes.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from edge_inspector.errors import RecordingError
from edge_inspector.lines import LineBlock
from edge_inspector.recording import (
    FILE_MAGIC,
    HeaderlessGeometry,
    RecordingHeader,
    RecordingReader,
    RecordingWriter,
    open_recording,
)

BLOCK = struct.Struct("<4sIQqQQIIQ8x")


def header(width: int = 37, channels: int = 3, dtype: str = "uint8", **kw) -> RecordingHeader:
    return RecordingHeader(
        width=width, channels=channels, dtype=dtype, line_rate_hz=2700.0, mm_per_px=0.37,
        mm_per_line=0.4, pixel_format="", camera={"vendor": "Acme", "model": "LS8K",
                                                  "serial": "123"},
        station="line-2", **kw,
    )


def random_lines(rng: np.random.Generator, n: int, h: RecordingHeader) -> np.ndarray:
    hi = 256 if h.dtype == "uint8" else 65536
    return rng.integers(0, hi, (n, h.width, h.channels), dtype=h.dtype)


def write(path: Path, h: RecordingHeader, blocks: list[LineBlock]) -> None:
    with RecordingWriter(path, h) as w:
        for b in blocks:
            w.write(b)


def block_offsets(path: Path) -> list[int]:
    """Byte offset of every block header, found from the documented layout alone."""
    data = path.read_bytes()
    (json_len,) = struct.unpack_from("<I", data, 12)
    off = -(-(16 + json_len) // 64) * 64
    out = []
    while off + 64 <= len(data):
        fields = BLOCK.unpack_from(data, off)
        out.append(off)
        off += 64 + -(-fields[8] // 64) * 64
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def three_blocks(tmp_path: Path, rng: np.random.Generator):
    """uint8 RGB, width 37 (lines not a multiple of 64 bytes), blocks of 5, 8 and 3 lines."""
    h = header()
    blocks = [
        LineBlock(random_lines(rng, 5, h), 0, encoder=1000, timestamp_ns=10),
        LineBlock(random_lines(rng, 8, h), 5, encoder=None, timestamp_ns=20),
        LineBlock(random_lines(rng, 3, h), 13, encoder=-7, timestamp_ns=30),
    ]
    path = tmp_path / "rec.raw"
    write(path, h, blocks)
    return path, h, blocks


# ---------------------------------------------------------------------------------- round trips


def test_round_trip_uint8_rgb_bit_exact_and_zero_copy(three_blocks) -> None:
    path, h, written = three_blocks
    with RecordingReader(path) as r:
        got = list(r.blocks())
        assert r.n_blocks == 3 and r.n_lines == 16 and r.lost_lines == 0
        assert r.line_range == (0, 16)
        assert r.warnings == []
        for a, b in zip(got, written, strict=True):
            assert a.lines.dtype == np.uint8 and a.lines.shape == b.lines.shape
            np.testing.assert_array_equal(a.lines, b.lines)
            assert (a.first_line, a.encoder, a.timestamp_ns, a.lost_before) == (
                b.first_line, b.encoder, b.timestamp_ns, 0
            )
            assert np.shares_memory(a.lines, r.memmap)
            assert not a.lines.flags.owndata and not a.lines.flags.writeable
        rh = r.header
    assert (rh.width, rh.channels, rh.dtype, rh.pixel_format) == (37, 3, "uint8", "RGB8")
    assert rh.camera == {"vendor": "Acme", "model": "LS8K", "serial": "123"}
    assert rh.station == "line-2" and rh.created == h.created and rh.mm_per_line == 0.4


def test_round_trip_uint16_mono_with_extras(tmp_path: Path, rng: np.random.Generator) -> None:
    h = header(width=100, channels=1, dtype="uint16",
               extra={"operator": "kim", "lot": {"id": 42, "tags": ["calf", "wet-blue"]}})
    blocks = [LineBlock(random_lines(rng, n, h), first, encoder=first * 10)
              for n, first in ((4, 0), (1, 4), (6, 5))]
    path = tmp_path / "mono.raw"
    write(path, h, blocks)
    r = open_recording(path)
    assert r.header.extra == {"operator": "kim", "lot": {"id": 42, "tags": ["calf", "wet-blue"]}}
    assert r.header.pixel_format == "Mono16"
    got = list(r)
    assert [b.first_line for b in got] == [0, 4, 5]
    assert [b.encoder for b in got] == [0, 40, 50]
    for a, b in zip(got, blocks, strict=True):
        assert a.lines.dtype == np.uint16 and a.lines.shape == (b.n_lines, 100, 1)
        np.testing.assert_array_equal(a.lines, b.lines)
        assert np.shares_memory(a.lines, r.memmap)
    assert got[2].lines.max() > 255  # really 16-bit samples


def test_byte_layout_matches_the_document(three_blocks) -> None:
    path, h, written = three_blocks
    data = path.read_bytes()
    magic, version, reserved, json_len = struct.unpack_from("<8sHHI", data, 0)
    assert (magic, version, reserved) == (b"EIRAW\r\n\x1a", 1, 0)
    meta = json.loads(data[16:16 + json_len])
    assert {"width", "channels", "dtype", "pixel_format", "line_rate_hz", "mm_per_px",
            "mm_per_line", "camera", "station", "created"} <= set(meta)
    assert set(data[16 + json_len:block_offsets(path)[0]]) <= {0x20}
    offsets = block_offsets(path)
    assert len(offsets) == 3 and all(o % 64 == 0 for o in offsets)
    assert len(data) % 64 == 0
    for off, b in zip(offsets, written, strict=True):
        bmagic, n, first, enc, ts, lost, flags, crc, nbytes = BLOCK.unpack_from(data, off)
        assert (bmagic, n, first, ts, lost) == (b"EIBK", b.n_lines, b.first_line,
                                                 b.timestamp_ns, 0)
        assert flags & 1 == (b.encoder is not None)
        assert enc == (b.encoder or 0)
        assert data[off + 56:off + 64] == bytes(8)
        payload = data[off + 64:off + 64 + nbytes]
        assert nbytes == b.lines.nbytes and payload == b.lines.tobytes()
        assert crc == zlib.crc32(payload)
        pad_end = off + 64 + -(-nbytes // 64) * 64
        assert data[off + 64 + nbytes:pad_end] == bytes(pad_end - off - 64 - nbytes)


def test_numpy_only_example_from_the_doc(three_blocks) -> None:
    """The reading recipe in docs/recording-format.md, kept here so it stays true."""
    path, _, written = three_blocks
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    assert bytes(raw[:8]) == b"EIRAW\r\n\x1a"
    json_len = int(raw[12:16].view("<u4")[0])
    meta = json.loads(bytes(raw[16:16 + json_len]))
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    line_bytes = meta["width"] * meta["channels"] * dtype.itemsize
    off = (16 + json_len + 63) // 64 * 64
    got = []
    while off + 64 <= len(raw):
        n = int(raw[off + 4:off + 8].view("<u4")[0])
        first_line = int(raw[off + 8:off + 16].view("<u8")[0])
        payload_bytes = int(raw[off + 48:off + 56].view("<u8")[0])
        if off + 64 + payload_bytes > len(raw):
            break
        lines = raw[off + 64:off + 64 + n * line_bytes].view(dtype)
        got.append((first_line, lines.reshape(n, meta["width"], meta["channels"])))
        off += 64 + (payload_bytes + 63) // 64 * 64
    assert [g[0] for g in got] == [b.first_line for b in written]
    for (_, lines), b in zip(got, written, strict=True):
        np.testing.assert_array_equal(lines, b.lines)


def test_full_8k_rgb_block(tmp_path: Path) -> None:
    h = header(width=8192)
    lines = np.broadcast_to(np.arange(8192 * 3, dtype=np.uint32).reshape(1, 8192, 3) % 251,
                            (512, 8192, 3)).astype(np.uint8)
    lines[::7] ^= 0x5A
    path = tmp_path / "8k.raw"
    with RecordingWriter(path, h) as w:
        w.write(LineBlock(lines, 0))
        w.write(LineBlock(lines[::-1], 512))  # not C-contiguous: copied once, still exact
        assert w.lines_written == 1024
    r = RecordingReader(path)
    a, b = list(r.blocks())
    np.testing.assert_array_equal(a.lines, lines)
    np.testing.assert_array_equal(b.lines, lines[::-1])
    assert a.lines.nbytes == 512 * 8192 * 3


def test_header_only_file_is_valid_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.raw"
    with RecordingWriter(path, header()):
        pass
    r = RecordingReader(path)
    assert (r.n_blocks, r.n_lines, r.lost_lines, r.line_range) == (0, 0, 0, (0, 0))
    assert list(r.blocks()) == [] and r.warnings == []


def test_blocks_from_start_line_cuts_the_first_block(three_blocks) -> None:
    path, _, written = three_blocks
    r = RecordingReader(path)
    got = list(r.blocks(start_line=7))
    assert [b.first_line for b in got] == [7, 13]
    np.testing.assert_array_equal(got[0].lines, written[1].lines[2:])
    assert got[0].encoder is None and got[0].lost_before == 0
    assert got[0].timestamp_ns == 20 + round(2 * 1e9 / 2700)
    assert np.shares_memory(got[0].lines, r.memmap)
    assert list(r.blocks(start_line=16)) == []


# ---------------------------------------------------------------------------------- lost lines


def test_gaps_become_lost_lines(tmp_path: Path, rng: np.random.Generator) -> None:
    h = header()
    blocks = [
        LineBlock(random_lines(rng, 10, h), 100, lost_before=0),
        LineBlock(random_lines(rng, 5, h), 160, lost_before=50),  # caller-reported gap
        LineBlock(random_lines(rng, 5, h), 180, lost_before=0),  # gap only in first_line
        LineBlock(random_lines(rng, 5, h), 185, lost_before=3),  # stored > gap: kept
    ]
    path = tmp_path / "gaps.raw"
    write(path, h, blocks)
    r = RecordingReader(path)
    got = list(r.blocks())
    assert [b.lost_before for b in got] == [0, 50, 15, 3]
    assert r.lost_lines == 68 and r.n_lines == 25 and r.line_range == (100, 190)
    # the stored field is what the writer was given
    stored = [BLOCK.unpack_from(path.read_bytes(), o)[5] for o in block_offsets(path)]
    assert stored == [0, 50, 0, 3]


# ---------------------------------------------------------------------------------- writer checks


def test_writer_rejects_bad_blocks_and_stays_usable(tmp_path: Path,
                                                    rng: np.random.Generator) -> None:
    h = header(width=16, channels=3)
    path = tmp_path / "w.raw"
    with RecordingWriter(path, h) as w:
        w.write(LineBlock(random_lines(rng, 4, h), 10))
        with pytest.raises(RecordingError, match=r"shape \(4, 16, 1\).*\(n_lines, 16, 3\)"):
            w.write(LineBlock(np.zeros((4, 16, 1), np.uint8), 14))
        with pytest.raises(RecordingError, match="shape"):
            w.write(LineBlock(np.zeros((4, 17, 3), np.uint8), 14))
        with pytest.raises(RecordingError, match="uint16.*header says uint8"):
            w.write(LineBlock(np.zeros((4, 16, 3), np.uint16), 14))
        with pytest.raises(RecordingError, match="float32"):
            w.write(LineBlock(np.zeros((4, 16, 3), np.float32), 14))
        with pytest.raises(RecordingError, match="first_line 12 goes backwards.*line 14"):
            w.write(LineBlock(random_lines(rng, 2, h), 12))
        with pytest.raises(RecordingError, match="0 lines"):
            w.write(LineBlock(np.zeros((0, 16, 3), np.uint8), 14))
        w.write(LineBlock(random_lines(rng, 2, h), 14))  # directly after: fine
        w.write(LineBlock(random_lines(rng, 2, h), 20))  # gap: fine
        assert w.lines_written == 8 and w.end_line == 22
    with pytest.raises(RecordingError, match="closed"):
        w.write(LineBlock(random_lines(rng, 2, h), 30))
    r = RecordingReader(path)
    assert r.n_blocks == 3 and r.warnings == [] and r.lost_lines == 4


def test_header_validation(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="'dtype'.*uint8"):
        RecordingHeader(width=10, channels=3, dtype="float32")
    with pytest.raises(RecordingError, match="'width'"):
        RecordingHeader(width=0, channels=3, dtype="uint8")
    with pytest.raises(RecordingError, match="clash"):
        RecordingWriter(tmp_path / "x.raw", header(extra={"width": 5}))
    h = header(extra={"note": "ok"})
    assert RecordingHeader.from_json(h.to_json()) == h


# ---------------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    "where, cut, n_ok, missing",
    [
        ("inside block 1 header", lambda o: o[1] + 10, 1, 54),
        ("inside block 1 payload", lambda o: o[1] + 64 + 5, 1, 8 * 37 * 3 - 5),
        ("inside block 2 payload, last byte", lambda o: o[2] + 64 + 3 * 37 * 3 - 1, 2, 1),
        ("inside block 0 header", lambda o: o[0] + 1, 0, 63),
    ],
)
def test_truncated_file_recovers_complete_blocks(three_blocks, where, cut, n_ok,
                                                 missing) -> None:
    path, _, written = three_blocks
    offsets = block_offsets(path)
    size = cut(offsets)
    path.write_bytes(path.read_bytes()[:size])
    seen: list[str] = []
    r = RecordingReader(path, on_warning=seen.append)
    got = list(r.blocks())
    assert len(got) == n_ok == r.n_blocks
    for a, b in zip(got, written, strict=False):
        np.testing.assert_array_equal(a.lines, b.lines)
    assert len(r.warnings) == 1 and seen == r.warnings
    assert f"block {n_ok} at byte {offsets[n_ok]}" in r.warnings[0]
    assert f"{missing} bytes missing" in r.warnings[0]


def test_cut_exactly_between_blocks_is_clean(three_blocks) -> None:
    path, _, _ = three_blocks
    path.write_bytes(path.read_bytes()[:block_offsets(path)[2]])
    r = RecordingReader(path)
    assert r.n_blocks == 2 and r.n_lines == 13 and r.warnings == []


def test_zero_filled_tail_after_power_loss(three_blocks) -> None:
    path, _, _ = three_blocks
    end = path.stat().st_size
    with open(path, "ab") as f:
        f.write(bytes(4096))
    r = RecordingReader(path)
    assert r.n_blocks == 3 and len(r.warnings) == 1
    assert f"at byte {end}" in r.warnings[0] and "4096 zero bytes" in r.warnings[0]


# ---------------------------------------------------------------------------------- corruption


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_corrupt_payload_byte_fails_crc_with_block_offset(three_blocks) -> None:
    path, _, written = three_blocks
    off1 = block_offsets(path)[1]
    data = path.read_bytes()
    patch(path, off1 + 64 + 100, bytes([data[off1 + 64 + 100] ^ 0x01]))

    r = RecordingReader(path)  # the index pass does not read payloads
    assert r.n_blocks == 3
    blocks = r.blocks()
    first = next(blocks)
    np.testing.assert_array_equal(first.lines, written[0].lines)
    with pytest.raises(RecordingError) as err:
        next(blocks)
    msg = str(err.value)
    assert str(path) in msg and f"block 1 at byte {off1}" in msg and "CRC-32 mismatch" in msg

    assert len(list(RecordingReader(path, verify_crc=False).blocks())) == 3

    r = RecordingReader(path, skip_corrupt=True)
    got = list(r.blocks())
    assert [b.first_line for b in got] == [0, 13]
    assert got[1].lost_before == 8 and r.lost_lines == 8 and r.n_lines == 8
    assert len(r.warnings) == 1 and f"block 1 at byte {off1}" in r.warnings[0]


def test_bad_block_magic(three_blocks) -> None:
    path, _, written = three_blocks
    off1 = block_offsets(path)[1]
    patch(path, off1, b"XXXX")
    with pytest.raises(RecordingError, match=rf"block 1 at byte {off1}: bad block magic"):
        RecordingReader(path)
    # skip_corrupt: reading goes on at the next valid block header; block 1's lines are lost
    r = RecordingReader(path, skip_corrupt=True)
    got = list(r.blocks())
    assert [(b.first_line, b.n_lines, b.lost_before) for b in got] == [(0, 5, 0), (13, 3, 8)]
    np.testing.assert_array_equal(got[1].lines, written[2].lines)
    assert r.lost_lines == 8
    off2 = block_offsets(path)[2]
    assert f"byte {off1}" in r.warnings[0] and f"next block header at byte {off2}" in r.warnings[0]
    # no valid header after the bad one: the rest is lost, reported by a final block without lines
    patch(path, off2, b"XXXX")
    r = RecordingReader(path, skip_corrupt=True)
    got = list(r.blocks())
    # (11 lines were there; the estimate uses the size of the last good block: 2 blocks of 5)
    assert [(b.first_line, b.n_lines, b.lost_before) for b in got] == [(0, 5, 0), (15, 0, 10)]
    rest = path.stat().st_size - off1
    assert f"remaining {rest} bytes (about 10 lines)" in r.warnings[0] and r.lost_lines == 10


def test_payload_length_inconsistent(three_blocks) -> None:
    path, _, _ = three_blocks
    off2 = block_offsets(path)[2]
    patch(path, off2 + 48, struct.pack("<Q", 12345))
    with pytest.raises(RecordingError, match=rf"block 2 at byte {off2}: payload_bytes 12345"):
        RecordingReader(path)


def test_first_line_going_backwards(three_blocks) -> None:
    path, _, written = three_blocks
    off2 = block_offsets(path)[2]
    patch(path, off2 + 8, struct.pack("<Q", 6))
    with pytest.raises(RecordingError, match=rf"block 2 at byte {off2}: first_line 6 goes back"):
        RecordingReader(path)
    r = RecordingReader(path, skip_corrupt=True)
    assert r.n_blocks == 2 and r.line_range == (0, 13) and "byte" in r.warnings[0]


# ---------------------------------------------------------------------------------- file header


def test_not_a_recording_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "dump.bin"
    path.write_bytes(bytes(range(256)) * 4)
    for opener in (RecordingReader, open_recording):
        with pytest.raises(RecordingError) as err:
            opener(path)
        msg = str(err.value)
        assert str(path) in msg and "byte 0" in msg and "--width/--channels/--dtype" in msg
    with pytest.raises(RecordingError, match="lacks --channels, --dtype"):
        open_recording(path, width=8)


def test_bad_json_and_bad_keys(tmp_path: Path) -> None:
    def file_with(body: bytes, version: int = 1) -> Path:
        p = tmp_path / f"h{abs(hash(body))}.raw"
        raw = struct.pack("<8sHHI", FILE_MAGIC, version, 0, len(body)) + body
        p.write_bytes(raw + b" " * (-len(raw) % 64))
        return p

    with pytest.raises(RecordingError, match="byte 16.*not valid UTF-8 JSON") as err:
        RecordingReader(file_with(b'{"width": 8192, '))
    assert "--width/--channels/--dtype" in str(err.value)
    good = json.loads(header().to_json())
    missing = {k: v for k, v in good.items() if k != "mm_per_px"}
    with pytest.raises(RecordingError, match=r"lacks required key\(s\) \['mm_per_px'\]"):
        RecordingReader(file_with(json.dumps(missing).encode()))
    with pytest.raises(RecordingError, match="header key 'width'.*positive integer"):
        RecordingReader(file_with(json.dumps({**good, "width": "8192"}).encode()))
    with pytest.raises(RecordingError, match="header key 'camera'"):
        RecordingReader(file_with(json.dumps({**good, "camera": "acme"}).encode()))
    with pytest.raises(RecordingError, match="byte 8: unknown format version 2"):
        RecordingReader(file_with(json.dumps(good).encode(), version=2))
    with pytest.raises(RecordingError, match="byte 12: header JSON length"):
        RecordingReader(_cut(file_with(json.dumps(good).encode()), 40))
    assert RecordingReader(file_with(json.dumps(good).encode())).n_lines == 0


def _cut(path: Path, size: int) -> Path:
    path.write_bytes(path.read_bytes()[:size])
    return path


# ---------------------------------------------------------------------------------- headerless


def test_headerless_dump_with_trailing_partial_line(tmp_path: Path,
                                                    rng: np.random.Generator) -> None:
    lines = rng.integers(0, 4096, (23, 10, 1), dtype=np.uint16)
    path = tmp_path / "camtool.bin"
    path.write_bytes(lines.tobytes() + b"\x01\x02\x03")
    r = open_recording(path, width=10, channels=1, dtype="uint16", block_lines=10)
    got = list(r.blocks())
    assert [(b.first_line, b.n_lines) for b in got] == [(0, 10), (10, 10), (20, 3)]
    np.testing.assert_array_equal(np.concatenate([b.lines for b in got]), lines)
    assert all(np.shares_memory(b.lines, r.memmap) for b in got)
    assert all(b.encoder is None and b.lost_before == 0 for b in got)
    assert r.header.extra == {"headerless": True} and r.n_lines == 23
    assert len(r.warnings) == 1
    assert f"3 trailing bytes at byte {23 * 20}" in r.warnings[0]


def test_headerless_reader_refuses_a_real_recording(three_blocks) -> None:
    path, _, _ = three_blocks
    with pytest.raises(RecordingError, match="has a .raw header"):
        RecordingReader(path, headerless=HeaderlessGeometry(37, 3, "uint8"))
    r = open_recording(path, width=99, channels=3, dtype="uint8")  # header wins
    assert r.header.width == 37 and "--width 99 ignored" in r.warnings[0]
