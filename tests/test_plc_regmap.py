"""The register map is the single source of truth: docs, PLC program, soft-PLC and client agree.

Every test here fails when one side drifts from firmware_io/register_map.toml.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from edge_inspector.config import Plc
from edge_inspector.mark import Action, InspectorState, Mark
from edge_inspector.plc import regmap_doc
from edge_inspector.plc.link import UNIT_KW, PlcLink
from edge_inspector.plc.outbox import Outbox
from edge_inspector.plc.regmap import (
    RegisterMapError,
    default_map,
    dint_diff,
    from_words,
    loads,
    to_words,
    wrap32,
)
from edge_inspector.plc.regmap_doc import render_markdown, render_st_block, st_block_of
from edge_inspector.plc.softplc import SoftPlc

ROOT = Path(__file__).resolve().parents[1]
MAP_TEXT = (ROOT / "firmware_io" / "register_map.toml").read_text(encoding="utf-8")
ST_PATH = ROOT / "firmware_io" / "edge_inspector_marks.st"


def _wait(cond, timeout: float = 5.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


# -- generated files ---------------------------------------------------------------------------

def test_docs_register_map_is_generated_from_the_map() -> None:
    assert (ROOT / "docs" / "register-map.md").read_text(encoding="utf-8") == render_markdown(), (
        "docs/register-map.md is stale: run python -m edge_inspector.plc.regmap --write"
    )


def test_st_program_block_is_generated_from_the_map() -> None:
    block = st_block_of(ST_PATH.read_text(encoding="utf-8"))
    assert block == render_st_block(), "ST register block is stale: run python -m edge_inspector.plc.regmap --write"


def _st_code(text: str) -> str:
    """The program without comments and without the generated block."""
    block = st_block_of(text)
    assert block is not None
    body = text.replace(block, "")
    return re.sub(r"//[^\n]*", "", re.sub(r"\(\*.*?\*\)", "", body, flags=re.S))


def test_st_program_uses_only_names_the_map_defines() -> None:
    defined = set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*:", render_st_block(), flags=re.M))
    code = _st_code(ST_PATH.read_text(encoding="utf-8"))
    used = set(re.findall(r"\b(?:REG|SLOT|RING|ACTION|STATE|FAULT)_[A-Z0-9_]+\b", code))
    used |= {n for n in ("MAP_VERSION", "HR_LAST", "HEARTBEAT_TIMEOUT", "FIRE_LIST_SIZE", "SLOT_STRIDE") if re.search(rf"\b{n}\b", code)}
    assert used - defined == set(), f"the ST program uses names the map does not define: {sorted(used - defined)}"
    m = default_map()
    # The program reads or writes every register and slot field of the map, and handles every action.
    want = {f"REG_{n}" for n in m.registers} | {f"SLOT_{n}" for n in m.ring.fields} | {f"ACTION_{n}" for n in m.actions}
    assert want - used == set(), f"the ST program ignores: {sorted(want - used)}"
    assert not re.search(r"HR\[\s*\d", code), "the ST program indexes registers by number instead of a map name"


def test_check_names_an_edited_st_address_and_write_restores_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "firmware_io").mkdir()
    shutil.copy(ROOT / "docs" / "register-map.md", tmp_path / "docs")
    st = tmp_path / "firmware_io" / ST_PATH.name
    st.write_text(ST_PATH.read_text(encoding="utf-8").replace("REG_LAST_ACK_SEQ : UINT := 1002;", "REG_LAST_ACK_SEQ : UINT := 1003;"))
    assert regmap_doc.main(["--check", "--root", str(tmp_path)]) == 1
    problems = regmap_doc.check(tmp_path)
    assert len(problems) == 1 and str(st) in problems[0]
    (tmp_path / "docs" / "register-map.md").write_text("old\n")
    assert len(regmap_doc.check(tmp_path)) == 2
    assert regmap_doc.main(["--write", "--root", str(tmp_path)]) == 0
    assert regmap_doc.check(tmp_path) == []
    assert "REG_LAST_ACK_SEQ : UINT := 1002;" in st.read_text()


def test_the_regenerate_command_keeps_its_name() -> None:
    """The generated files cite ``python -m edge_inspector.plc.regmap --write``: the generators answer there."""
    r = subprocess.run([sys.executable, "-m", "edge_inspector.plc.regmap", "--check", "--root", str(ROOT)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    assert regmap_doc.REGENERATE == "python -m edge_inspector.plc.regmap --write"


# -- validation --------------------------------------------------------------------------------

def test_overlapping_registers_are_rejected_naming_both() -> None:
    text = MAP_TEXT.replace('name = "BELT_POSITION"\naddress = 1004', 'name = "BELT_POSITION"\naddress = 1003')
    assert text != MAP_TEXT
    with pytest.raises(RegisterMapError, match=r"LAST_ACK_SEQ \(1002\.\.1003\) and BELT_POSITION \(1003\.\.1004\) overlap"):
        loads(text)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('name = "LAST_WRITTEN_SEQ"\naddress = 4\ntype = "UDINT"\ncount = 2', 'name = "LAST_WRITTEN_SEQ"\naddress = 4\ntype = "UDINT"\ncount = 1', "count 1 does not match type UDINT"),
        ("base = 100\nslots = 16", "base = 100\nslots = 64", "ring (100..1123) lies outside block"),
        ('name = "LENGTH"\noffset = 12', 'name = "LENGTH"\noffset = 15', "does not fit the slot stride"),
        ("REJECT_HIDE = 2\nUNINSPECTED_START", "REJECT_HIDE = 7\nUNINSPECTED_START", "differs from edge_inspector.mark.Action"),
        ("STOPPED = 0", "STOPPED = 9", "differs from edge_inspector.mark.InspectorState"),
        ('name = "MARKS_FIRED"\naddress = 1012', 'name = "MARKS_FIRED"\naddress = 2000', "outside block plc"),
    ],
)
def test_invalid_maps_are_rejected(old: str, new: str, message: str) -> None:
    assert old in MAP_TEXT
    with pytest.raises(RegisterMapError) as e:
        loads(MAP_TEXT.replace(old, new, 1))
    assert message in str(e.value)


def test_the_shipped_map_loads_from_the_installed_package() -> None:
    files = resources.files("edge_inspector.firmware_io")
    assert files.joinpath("register_map.toml").is_file() and files.joinpath("edge_inspector_marks.st").is_file()
    m = default_map()
    assert m.ring.slots == 16 and m.table == "holding"
    assert m.states == {s.name: int(s) for s in InspectorState}
    assert m.covers(*m.span("plc")) and not m.covers(3, 1)


def test_pyproject_lists_every_subpackage() -> None:
    """packages are listed explicitly (for the firmware_io mapping): a new subpackage must be added."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edge_inspector").rglob("__init__.py")}
    assert found - listed == set(), f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert cfg["package-dir"]["edge_inspector.firmware_io"] == "firmware_io"


# -- encoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("iec_type", "raw", "words"),
    [
        ("UINT", 65535, [0xFFFF]),
        ("INT", -1, [0xFFFF]),
        ("INT", -32768, [0x8000]),
        ("UDINT", 0x12345678, [0x1234, 0x5678]),
        ("UDINT", 0xFFFF_FFFF, [0xFFFF, 0xFFFF]),
        ("DINT", -2, [0xFFFF, 0xFFFE]),
        ("DINT", -(1 << 31), [0x8000, 0x0000]),
        ("DINT", (1 << 31) - 1, [0x7FFF, 0xFFFF]),
    ],
)
def test_words_big_endian_high_word_first(iec_type: str, raw: int, words: list[int]) -> None:
    assert to_words(raw, iec_type) == words
    assert from_words(words, iec_type) == raw


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValueError, match="UINT"):
        to_words(65536, "UINT")
    with pytest.raises(ValueError, match="ACROSS_POS"):
        default_map().encode_mark(Mark(Action.INK, 0.0, across_mm=3e8))
    with pytest.raises(ValueError, match="LENGTH"):
        default_map().encode_mark(Mark(Action.INK, 0.0, length_mm=-1.0))


def test_positions_wrap_modulo_2_32() -> None:
    top = (1 << 31) - 1
    assert wrap32(top + 1) == -(1 << 31)
    assert dint_diff(wrap32(top + 5), top) == 5  # 5 counts past the wrap is still "after"
    assert dint_diff(top, wrap32(top + 5)) == -5
    belt = default_map().ring.fields["BELT_POS"]
    beyond = (top + 5) / 10  # mm: 0.5 mm past the largest DINT
    raw = from_words(belt.encode(beyond), "DINT")
    assert raw == -(1 << 31) + 4
    assert dint_diff(raw, belt.to_raw(top / 10)) == 5


def test_mark_round_trip_including_negative_and_wrapped_values() -> None:
    m = default_map()
    marks = [
        Mark(Action.INK, 1234.5, across_mm=-12.3, class_id=65535, hide_id=7, length_mm=4.5, seq=1),
        Mark(Action.REJECT_HIDE, -98765.4, across_mm=3000.0, hide_id=0xFFFF_FFFF, seq=0xFFFF_FFFF),
        Mark(Action.UNINSPECTED_START, 0.0, length_mm=1e6, seq=17),
    ]
    for mk in marks:
        words = m.encode_mark(mk)
        assert len(words) == m.ring.words and all(0 <= w <= 0xFFFF for w in words)
        back = m.decode_mark(words)
        assert (back.seq, back.action, back.class_id, back.hide_id) == (mk.seq, mk.action, mk.class_id, mk.hide_id)
        assert back.belt_mm == pytest.approx(mk.belt_mm, abs=0.05)
        assert back.across_mm == pytest.approx(mk.across_mm, abs=0.05)
        assert back.length_mm == pytest.approx(mk.length_mm, abs=0.05)
    wrapped = m.decode_mark(m.encode_mark(Mark(Action.HIDE_START, 214748364.8 + 10.0, hide_id=(1 << 32) + 3)))
    assert wrapped.belt_mm == pytest.approx(-214748364.8 + 10.0) and wrapped.hide_id == 3


# -- soft-PLC and client on a real server ------------------------------------------------------

def test_every_slot_field_round_trips_through_the_soft_plc() -> None:
    m = default_map()
    with SoftPlc(consume=False) as plc:
        c = ModbusTcpClient("127.0.0.1", port=plc.port, timeout=1.0, retries=0)
        assert c.connect()
        try:
            for slot in range(m.ring.slots):
                mk = Mark(Action(1 + slot % 6), -500.0 + 37.3 * slot, across_mm=-3.1 * slot, class_id=slot,
                          hide_id=1_000_000 + slot, length_mm=0.1 * slot, seq=slot + 1)
                rr = c.write_registers(m.ring.slot_address(slot), m.encode_mark(mk), **{UNIT_KW: 1})
                assert not rr.isError()
                got = plc.slot_mark(slot)
                assert got == m.decode_mark(m.encode_mark(mk))
                rr = c.read_holding_registers(m.ring.slot_address(slot), count=m.ring.words, **{UNIT_KW: 1})
                assert m.decode_mark(rr.registers) == got
            # Writes into the PLC's block, and reads outside every block, are refused.
            assert c.write_registers(m.reg("LAST_ACK_SEQ").address, [0, 1], **{UNIT_KW: 1}).isError()
            assert c.read_holding_registers(m.hr_last, count=2, **{UNIT_KW: 1}).isError()
        finally:
            c.close()


def test_soft_plc_publishes_every_plc_register_at_its_map_address() -> None:
    m = default_map()
    first, count = m.span("plc")
    with SoftPlc(speed_mm_s=250.0) as plc:
        c = ModbusTcpClient("127.0.0.1", port=plc.port, timeout=1.0, retries=0)
        assert c.connect()
        try:
            regs = [r for r in m.registers.values() if r.writer == "plc" and r.name != "PLC_ALIVE"]
            for i, r in enumerate(regs):
                plc.force(r.name, 100 + i)
            words = c.read_holding_registers(first, count=count, **{UNIT_KW: 1}).registers
            assert {r.name: m.decode(r.name, words, first) for r in regs} == {r.name: 100 + i for i, r in enumerate(regs)}
            for r in regs:
                plc.force(r.name, None)
            assert _wait(lambda: plc.read("PLC_MAP_VERSION") == m.version)
            words = c.read_holding_registers(first, count=count, **{UNIT_KW: 1}).registers
            assert m.decode("BELT_SPEED", words, first) == pytest.approx(250.0)
            assert m.decode("LINE_RUNNING", words, first) == 1
            assert m.decode("PLC_MAP_VERSION", words, first) == m.version
        finally:
            c.close()


def test_client_and_soft_plc_use_only_map_addresses(tmp_path: Path) -> None:
    m = default_map()
    with SoftPlc(speed_mm_s=500.0, marker_distance_mm=50.0) as plc:
        link = PlcLink(Plc(host="127.0.0.1", port=plc.port, heartbeat_ms=20), Outbox(tmp_path / "o.sqlite")).start()
        try:
            assert link.wait_connected(5.0)
            belt = link.belt_mm()
            assert belt is not None
            link.submit([Mark(Action(1 + i % 6), belt + i, key=str(i)) for i in range(20)])
            assert link.drain(5.0)
        finally:
            link.stop()
        acc = plc.accesses()
    assert acc, "no client requests recorded"
    outside = [a for a in acc if not m.covers(a[1], a[2])]
    assert outside == [], f"requests outside the map's registers: {outside}"
    assert any(addr == m.reg("LAST_WRITTEN_SEQ").address and fc == 16 for fc, addr, _ in acc)
    assert {addr for fc, addr, _ in acc if fc == 16} >= {m.ring.slot_address(k) for k in range(m.ring.slots)}


def test_a_moved_map_moves_client_and_soft_plc_together(tmp_path: Path) -> None:
    """Nothing hard-codes an address: shift every block and the ring, and marks still arrive."""
    text = MAP_TEXT.replace("base = 100\n", "base = 500\n")
    for a in range(1000, 1018):
        text = text.replace(f"address = {a}\n", f"address = {a + 200}\n")
    moved = loads(text)
    assert moved.reg("LAST_ACK_SEQ").address == 1202 and moved.ring.base == 500
    with SoftPlc(speed_mm_s=500.0, marker_distance_mm=50.0, register_map=moved) as plc:
        link = PlcLink(Plc(host="127.0.0.1", port=plc.port, heartbeat_ms=20), Outbox(tmp_path / "o.sqlite"),
                       register_map=moved).start()
        try:
            assert link.wait_connected(5.0)
            belt = link.belt_mm()
            assert belt is not None
            link.submit([Mark(Action.INK, belt + 5 * i, key=str(i)) for i in range(20)])
            assert link.drain(5.0)
            assert _wait(lambda: len(plc.fired) == 20, 5.0)
        finally:
            link.stop()
        assert all(moved.covers(addr, n) for _, addr, n in plc.accesses())
        assert any(addr == 1200 for _, addr, _ in plc.accesses())


def test_soft_plc_survives_an_unknown_action_code() -> None:
    """Like the ST program's CASE ... ELSE: consumed, acknowledged, fired as nothing."""
    m = default_map()
    with SoftPlc(marker_distance_mm=300.0) as plc:
        c = ModbusTcpClient("127.0.0.1", port=plc.port, timeout=1.0, retries=0)
        assert c.connect()
        try:
            words = m.encode_mark(Mark(Action.INK, plc.belt_mm + 1.0, seq=1))
            words[m.ring.fields["ACTION"].address] = 9
            c.write_registers(m.ring.slot_address(0), words, **{UNIT_KW: 1})
            c.write_registers(m.reg("MAP_VERSION").address, [m.version], **{UNIT_KW: 1})
            c.write_registers(m.reg("LAST_WRITTEN_SEQ").address, m.reg("LAST_WRITTEN_SEQ").encode(1), **{UNIT_KW: 1})
            assert _wait(lambda: plc.read("LAST_ACK_SEQ") == 1 and plc.fired)
            assert plc.fired[0]["action"] == "unknown(9)"
        finally:
            c.close()
