"""The PLC register map: load and validate ``firmware_io/register_map.toml``, encode and decode.

Everything that touches a register address goes through a ``RegisterMap``: the Modbus client
(``link.py``), the soft-PLC (``softplc.py``), and the generators (``regmap_doc.py``) of
docs/register-map.md and of the register block in ``firmware_io/edge_inspector_marks.st``::

    m = default_map()
    m.reg("LAST_ACK_SEQ").address              # 1002
    words = m.encode_mark(mark)                # the registers of one ring slot
    m.ring.slot_address(m.ring.slot_of(seq))   # where they go

Regenerate the derived files after editing the TOML (``--check`` exits 1 naming what differs)::

    python -m edge_inspector.plc.regmap --write
"""

from __future__ import annotations

import functools
import sys
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Any

from ..mark import Action, InspectorState, Mark

MAP_PACKAGE = "edge_inspector.firmware_io"
MAP_FILE = "register_map.toml"

WORDS = {"UINT": 1, "INT": 1, "UDINT": 2, "DINT": 2}
_RANGE = {
    "UINT": (0, 0xFFFF),
    "INT": (-0x8000, 0x7FFF),
    "UDINT": (0, 0xFFFF_FFFF),
    "DINT": (-0x8000_0000, 0x7FFF_FFFF),
}
# Ring slot field -> Mark attribute. A slot field without a Mark attribute cannot be filled.
MARK_ATTRS = {
    "SEQ": "seq",
    "ACTION": "action",
    "BELT_POS": "belt_mm",
    "ACROSS_POS": "across_mm",
    "CLASS_ID": "class_id",
    "HIDE_ID": "hide_id",
    "LENGTH": "length_mm",
}


class RegisterMapError(ValueError):
    """A register map that breaks a rule; the message lists every problem."""


# -- raw values <-> 16-bit words --------------------------------------------------------------

def wrap32(raw: int, signed: bool = True) -> int:
    """``raw`` modulo 2^32, as a DINT (signed) or UDINT."""
    u = raw & 0xFFFF_FFFF
    return u - (1 << 32) if signed and u >= 1 << 31 else u


def dint_diff(a: int, b: int) -> int:
    """``a - b`` for positions that wrap modulo 2^32: the signed 32-bit difference."""
    return wrap32(a - b)


def to_words(raw: int, iec_type: str) -> list[int]:
    """One raw value -> its registers, high word first. Raises ValueError when out of range."""
    lo, hi = _RANGE[iec_type]
    if not lo <= raw <= hi:
        raise ValueError(f"{raw} does not fit an {iec_type} ({lo}..{hi})")
    u = raw & 0xFFFF_FFFF
    return [u & 0xFFFF] if WORDS[iec_type] == 1 else [u >> 16, u & 0xFFFF]


def from_words(words: list[int], iec_type: str) -> int:
    """Registers (high word first) -> the raw value of ``iec_type``."""
    n = WORDS[iec_type]
    u = words[0] if n == 1 else (words[0] << 16) | words[1]
    bits = 16 * n
    return u - (1 << bits) if iec_type in ("INT", "DINT") and u >= 1 << (bits - 1) else u


# -- the map -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """A register (``address`` absolute) or a ring slot field (``address`` = slot offset)."""

    name: str
    address: int
    type: str
    count: int
    scale: Fraction
    unit: str
    meaning: str
    writer: str
    wraps: bool = False

    @property
    def last(self) -> int:
        return self.address + self.count - 1

    def to_raw(self, value: float, wrap: bool = True) -> int:
        """Physical value -> raw integer (scaled, rounded; wrapped modulo 2^32 when it wraps).

        ``wrap=False``: the unwrapped count, for positions kept on a line that never wraps.
        """
        raw = round(Fraction(value) / self.scale)
        if self.wraps and wrap:
            raw = wrap32(raw, signed=self.type == "DINT")
        return raw

    def to_physical(self, raw: int) -> float | int:
        return raw if self.scale == 1 else float(raw * self.scale)

    def encode(self, value: float) -> list[int]:
        try:
            return to_words(self.to_raw(value), self.type)
        except (ValueError, OverflowError, TypeError) as e:
            raise ValueError(f"{self.name}: {value!r} {self.unit}: {e}") from None

    def decode(self, words: list[int]) -> float | int:
        return self.to_physical(from_words(words[: self.count], self.type))


@dataclass(frozen=True)
class Block:
    name: str
    first: int
    last: int
    meaning: str


@dataclass(frozen=True)
class Ring:
    """The mark ring: sequence s lives in slot (s - 1) mod ``slots``."""

    base: int
    slots: int
    stride: int
    writer: str
    fields: dict[str, Field]

    @property
    def last(self) -> int:
        return self.base + self.slots * self.stride - 1

    @property
    def words(self) -> int:
        """Registers of a slot that carry fields (written in one request)."""
        return max(f.last for f in self.fields.values()) + 1

    def slot_of(self, seq: int) -> int:
        return (seq - 1) % self.slots

    def slot_address(self, slot: int) -> int:
        return self.base + slot * self.stride


@dataclass(frozen=True)
class RegisterMap:
    version: int
    table: str
    word_order: str
    heartbeat_period_ms: int
    heartbeat_timeout_ms: int
    fire_list_size: int
    fire_window_mm: float  # a target passed by more than this is counted missed, never fired late
    blocks: dict[str, Block]
    registers: dict[str, Field]
    ring: Ring
    states: dict[str, int]
    actions: dict[str, int]
    actuators: dict[str, str]
    faults: dict[str, int]

    def reg(self, name: str) -> Field:
        return self.registers[name]

    @property
    def fire_window(self) -> int:
        """``fire_window_mm`` in raw position counts (BELT_POSITION's scale)."""
        return self.reg("BELT_POSITION").to_raw(self.fire_window_mm, wrap=False)

    def span(self, writer: str) -> tuple[int, int]:
        """(first address, count) covering every register of ``writer`` (the ring excluded)."""
        regs = [r for r in self.registers.values() if r.writer == writer]
        first = min(r.address for r in regs)
        return first, max(r.last for r in regs) - first + 1

    @property
    def hr_last(self) -> int:
        """Highest holding-register address of any block (size of a PLC's register array - 1)."""
        return max(b.last for b in self.blocks.values())

    def owner(self, address: int) -> str | None:
        """Name of the register or ``RING[slot].FIELD`` at ``address``; None outside the map.

        A gap between fields inside the registers a slot write covers is ``RING[slot].reserved``.
        """
        for r in self.registers.values():
            if r.address <= address <= r.last:
                return r.name
        ring = self.ring
        slot, off = divmod(address - ring.base, ring.stride)
        if not (0 <= slot < ring.slots and off < ring.words):
            return None
        field = next((f.name for f in ring.fields.values() if f.address <= off <= f.last), "reserved")
        return f"RING[{slot}].{field}"

    def covers(self, address: int, count: int) -> bool:
        """True when every address of the range belongs to a register or a slot field."""
        return all(self.owner(a) is not None for a in range(address, address + count))

    def fault_names(self, bits: int) -> list[str]:
        """Names of the set bits of MARKER_FAULTS."""
        return [name for name, bit in self.faults.items() if bits >> bit & 1]

    def decode(self, name: str, words: list[int], first: int) -> float | int:
        """Value of register ``name`` from ``words`` read starting at address ``first``."""
        r = self.registers[name]
        return r.decode(words[r.address - first : r.address - first + r.count])

    def encode_mark(self, mark: Mark) -> list[int]:
        """The registers of one ring slot (``ring.words`` long) for ``mark``."""
        words = [0] * self.ring.words
        for f in self.ring.fields.values():
            words[f.address : f.address + f.count] = f.encode(getattr(mark, MARK_ATTRS[f.name]))
        return words

    def decode_mark(self, words: list[int]) -> Mark:
        """A ring slot's registers -> Mark (only the fields the PLC sees)."""
        vals = {MARK_ATTRS[f.name]: f.decode(words[f.address : f.address + f.count]) for f in self.ring.fields.values()}
        vals["action"] = Action(vals["action"])
        return Mark(**vals)


# -- loading and validation --------------------------------------------------------------------

def _field(d: dict[str, Any], writer: str, address_key: str) -> Field:
    return Field(
        name=str(d["name"]),
        address=int(d[address_key]),
        type=str(d["type"]),
        count=int(d["count"]),
        scale=Fraction(str(d.get("scale", 1))),
        unit=str(d.get("unit", "")),
        meaning=str(d.get("meaning", "")),
        writer=writer,
        wraps=bool(d.get("wraps", False)),
    )


def _field_problems(f: Field, what: str) -> list[str]:
    out = []
    if f.type not in WORDS:
        out.append(f"{what} {f.name}: type {f.type!r} is not one of {', '.join(WORDS)}")
    elif f.count != WORDS[f.type]:
        out.append(f"{what} {f.name}: count {f.count} does not match type {f.type} ({WORDS[f.type]} register(s))")
    if f.scale <= 0:
        out.append(f"{what} {f.name}: scale must be positive")
    return out


def _overlaps(spans: list[tuple[str, int, int]]) -> list[str]:
    """Every pair of (name, first, last) spans that share an address."""
    out = []
    ordered = sorted(spans, key=lambda s: (s[1], s[2]))
    for i, (a, a0, a1) in enumerate(ordered):
        for b, b0, b1 in ordered[i + 1 :]:
            if b0 > a1:
                break
            out.append(f"{a} ({a0}..{a1}) and {b} ({b0}..{b1}) overlap")
    return out


def _codes_problems(given: dict[str, int], enum: type[Action] | type[InspectorState], what: str) -> list[str]:
    want = {e.name: int(e.value) for e in enum}
    if given == want:
        return []
    return [f"[{what}] {given} differs from {enum.__module__}.{enum.__name__} {want}"]


def _problems(m: RegisterMap) -> list[str]:
    out: list[str] = []
    if m.table != "holding":
        out.append(f"map.table: {m.table!r}; only holding registers are supported")
    if m.word_order != "big-endian":
        out.append(f"map.word_order: {m.word_order!r}; the protocol uses big-endian words, high word first")
    if m.heartbeat_timeout_ms <= m.heartbeat_period_ms:
        out.append("map.heartbeat_timeout_ms must be longer than map.heartbeat_period_ms")
    if not 0 < m.fire_window_mm < 10_000:
        out.append(f"map.fire_window_mm: {m.fire_window_mm:g}; give a positive window below 10 m (e.g. 20)")
    for r in m.registers.values():
        out += _field_problems(r, "register")
        b = m.blocks.get(r.writer)
        if b is None:
            out.append(f"register {r.name}: writer {r.writer!r} has no [blocks.{r.writer}]")
        elif not b.first <= r.address <= r.last <= b.last:
            out.append(f"register {r.name} ({r.address}..{r.last}) lies outside block {b.name} ({b.first}..{b.last})")
    ring = m.ring
    rb = m.blocks.get(ring.writer)
    if ring.slots < 1 or ring.stride < 1:
        out.append("ring: slots and stride must be at least 1")
    elif rb is None or not rb.first <= ring.base <= ring.last <= rb.last:
        out.append(f"ring ({ring.base}..{ring.last}) lies outside block {ring.writer!r}")
    for f in ring.fields.values():
        out += _field_problems(f, "ring field")
        if f.name not in MARK_ATTRS:
            out.append(f"ring field {f.name}: no Mark attribute for it (edge_inspector.plc.regmap.MARK_ATTRS)")
        if f.address < 0 or f.last >= ring.stride:
            out.append(f"ring field {f.name} (offset {f.address}..{f.last}) does not fit the slot stride {ring.stride}")
    missing = sorted(set(MARK_ATTRS) - set(ring.fields))
    if missing:
        out.append(f"ring: fields {', '.join(missing)} are missing")
    out += [f"ring fields {p}" for p in _overlaps([(f.name, f.address, f.last) for f in ring.fields.values()])]
    spans = [(r.name, r.address, r.last) for r in m.registers.values()]
    spans.append(("RING", ring.base, ring.last))
    out += [f"registers {p}" for p in _overlaps(spans)]
    out += _overlaps([(f"block {b.name}", b.first, b.last) for b in m.blocks.values()])
    out += _codes_problems(m.states, InspectorState, "states")
    out += _codes_problems(m.actions, Action, "actions")
    if set(m.actuators) != set(m.actions):
        out.append(f"[actuators] must name one actuator for each action {sorted(m.actions)}")
    bits = list(m.faults.values())
    if any(not 0 <= b <= 15 for b in bits) or len(set(bits)) != len(bits):
        out.append(f"[faults] bits must be distinct and within 0..15: {m.faults}")
    return out


def parse(data: dict[str, Any], source: str = MAP_FILE) -> RegisterMap:
    """Build and validate a map from the TOML's data; RegisterMapError lists every problem."""
    try:
        meta = data["map"]
        ring = data["ring"]
        m = RegisterMap(
            version=int(meta["version"]),
            table=str(meta["table"]),
            word_order=str(meta["word_order"]),
            heartbeat_period_ms=int(meta["heartbeat_period_ms"]),
            heartbeat_timeout_ms=int(meta["heartbeat_timeout_ms"]),
            fire_list_size=int(meta["fire_list_size"]),
            fire_window_mm=float(meta["fire_window_mm"]),
            blocks={k: Block(k, int(b["first"]), int(b["last"]), str(b.get("meaning", ""))) for k, b in data["blocks"].items()},
            registers={r["name"]: _field(r, str(r["writer"]), "address") for r in data["registers"]},
            ring=Ring(
                base=int(ring["base"]),
                slots=int(ring["slots"]),
                stride=int(ring["stride"]),
                writer=str(ring["writer"]),
                fields={f["name"]: _field(f, str(ring["writer"]), "offset") for f in ring["fields"]},
            ),
            states={k: int(v) for k, v in data["states"].items()},
            actions={k: int(v) for k, v in data["actions"].items()},
            actuators={k: str(v) for k, v in data["actuators"].items()},
            faults={k: int(v) for k, v in data["faults"].items()},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RegisterMapError(f"{source}: missing or malformed entry: {e}") from None
    problems = _problems(m)
    if len(data["registers"]) != len(m.registers):
        names = [r["name"] for r in data["registers"]]
        problems.insert(0, f"register names used twice: {sorted({n for n in names if names.count(n) > 1})}")
    if problems:
        raise RegisterMapError(f"{source}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return m


def loads(text: str, source: str = MAP_FILE) -> RegisterMap:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegisterMapError(f"{source}: not valid TOML: {e}") from None
    return parse(data, source)


@functools.cache
def default_map() -> RegisterMap:
    """The map shipped in ``edge_inspector.firmware_io`` (loaded once)."""
    return loads(resources.files(MAP_PACKAGE).joinpath(MAP_FILE).read_text(encoding="utf-8"))


if __name__ == "__main__":  # the generators' command (regmap_doc.py), under the name the generated files cite
    from .regmap_doc import main

    sys.exit(main())
