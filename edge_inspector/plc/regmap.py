"""The PLC register map: load and validate ``firmware_io/register_map.toml``, encode and decode.

Everything that touches a register address goes through a ``RegisterMap``: the Modbus client
(``link.py``), the soft-PLC (``softplc.py``), and the generators of docs/register-map.md and
of the register block in ``firmware_io/edge_inspector_marks.st``::

    m = default_map()
    m.reg("LAST_ACK_SEQ").address              # 1002
    words = m.encode_mark(mark)                # the registers of one ring slot
    m.ring.slot_address(m.ring.slot_of(seq))   # where they go

Regenerate the derived files after editing the TOML (``--check`` exits 1 naming what differs)::

    python -m edge_inspector.plc.regmap --write
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from ..mark import Action, InspectorState, Mark

MAP_PACKAGE = "edge_inspector.firmware_io"
MAP_FILE = "register_map.toml"
ST_FILE = "edge_inspector_marks.st"
DOC_FILE = Path("docs") / "register-map.md"
REGENERATE = "python -m edge_inspector.plc.regmap --write"
ST_BEGIN = f"(* BEGIN REGISTER MAP: generated from {MAP_FILE} by `{REGENERATE}`; do not edit *)"
ST_END = "(* END REGISTER MAP *)"

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
    blocks: dict[str, Block]
    registers: dict[str, Field]
    ring: Ring
    states: dict[str, int]
    actions: dict[str, int]
    actuators: dict[str, str]
    faults: dict[str, int]

    def reg(self, name: str) -> Field:
        return self.registers[name]

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


# -- generators --------------------------------------------------------------------------------

def _scale(f: Field) -> str:
    return f"{float(f.scale):g}"


def _st_comment(f: Field) -> str:
    """"DINT, plc, 0.1 mm" / "UINT, inspector, count": type, writer, what one raw count is."""
    unit = f"{_scale(f)} {f.unit}" if f.scale != 1 else f.unit
    return ", ".join(p for p in (f.type, f.writer, unit) if p)


def _rows(fields: list[Field], table: str, offset: bool = False) -> list[str]:
    head = "| Offset | Field |" if offset else "| Address | Name |"
    out = [
        f"{head} Type | Regs | Scale | Unit | Writer | Table | Meaning |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in fields:
        unit = f.unit + (" (wraps mod 2^32)" if f.wraps else "")
        out.append(
            f"| {f.address} | `{f.name}` | {f.type} | {f.count} | {_scale(f)} | {unit} | {f.writer} | {table} | {f.meaning} |"
        )
    return out


def _codes(title: str, codes: dict[str, int], extra: dict[str, str] | None = None) -> list[str]:
    head = "| Code | Name |" + (" Actuator |" if extra else "")
    out = [f"### {title}", "", head, "| --- | --- |" + (" --- |" if extra else "")]
    for name, v in codes.items():
        out.append(f"| {v} | `{name}` |" + (f" {extra[name]} |" if extra else ""))
    return out + [""]


_RULES = """\
## Protocol

### Ring of mark slots

1. The inspector keeps every mark in a persistent outbox (SQLite) **before** anything is sent;
   each mark gets the next sequence number `s` (1, 2, 3, ...; sequences never wrap: a UDINT
   lasts 27 years at 5 marks/s).
2. Mark `s` is written into slot `(s - 1) mod {slots}` at address `{base} + slot x {stride}`:
   all {words} registers of the slot in **one** write request (function 16), then
   `LAST_WRITTEN_SEQ` = `s` (a batch of slots may be followed by one `LAST_WRITTEN_SEQ` write).
3. A slot is never overwritten before the PLC acknowledged its mark: the inspector writes
   sequence `s` only when `s - {slots} <= LAST_ACK_SEQ`. When the ring is full the inspector
   waits (backpressure: counted, logged, state `DEGRADED`); marks stay in the outbox.
4. The PLC consumes in order: while `LAST_WRITTEN_SEQ >= LAST_ACK_SEQ + 1` it reads the slot of
   `n = LAST_ACK_SEQ + 1`; it takes the slot only when the slot's `SEQ` equals `n` (otherwise it
   waits, fault bit `SEQ_MISMATCH`), puts the action into its fire list at target =
   `BELT_POS` + the actuator's distance, and sets `LAST_ACK_SEQ` = `n`. At most {slots} slots per scan.
5. De-duplication: the PLC only ever takes `LAST_ACK_SEQ + 1`, so a sequence `<= LAST_ACK_SEQ`
   (a resend) is ignored. `LAST_ACK_SEQ` and the fire list are RETAIN: a PLC restart fires
   every acknowledged mark exactly once.
6. A mark whose target has already passed the actuator when it is consumed is not fired: it is
   counted in `MARKS_MISSED` (and acknowledged). Fire list full ({fire_list} entries): the PLC
   stops acknowledging (fault bit `FIRE_LIST_FULL`) until an entry fires.
7. Firing: the PLC fires when the signed 32-bit difference `BELT_POSITION - target` becomes
   `>= 0` (positions wrap modulo 2^32: never compare raw values). It then counts `MARKS_FIRED`
   and sets `LAST_FIRED_SEQ`.

### After a (re)connect: resend from ack + 1

- The inspector reads `LAST_ACK_SEQ`, marks everything `<=` it acknowledged in its outbox, and
  writes every pending mark from `LAST_ACK_SEQ + 1` on again (rule 3 applies). Marks the PLC
  already has are ignored by rule 5, so a resend never fires a mark twice.
- `LAST_ACK_SEQ` beyond every sequence the inspector ever assigned, with an outbox that never
  saw an acknowledgement (a fresh outbox on a PLC that has history): the inspector continues
  above `max(LAST_ACK_SEQ, LAST_WRITTEN_SEQ)`, renumbering its pending marks.
- `LAST_ACK_SEQ` beyond everything written otherwise: the register is not trusted (logged with
  its address and value, state `DEGRADED`); nothing is acknowledged with it and the ring is
  gated by the last trusted acknowledgement.
- `LAST_ACK_SEQ` and `LAST_WRITTEN_SEQ` both 0 while the outbox had acknowledgements: the PLC
  lost its memory (cold start, new PLC); pending marks are renumbered from 1 and an error says
  that acknowledged marks that had not fired yet are lost. `LAST_ACK_SEQ` lower than before in
  any other case: logged, state `DEGRADED`, nothing is sent until it makes sense again.
- `PLC_MAP_VERSION` not 0 and not {version}: the inspector sends no marks (logged); the PLC in
  turn consumes nothing while `MAP_VERSION` differs from its own (fault bit `MAP_VERSION`).

### Heartbeat

- Every {period} ms the inspector writes `MAP_VERSION`, `INSPECTOR_HEARTBEAT` (+1 mod 65536)
  and `INSPECTOR_STATE` in one request, then reads the PLC block ({plc_first}..{plc_last}) in one request.
- `INSPECTOR_HEARTBEAT` unchanged for {timeout} ms while `INSPECTOR_STATE` is not `STOPPED`: the
  PLC sets `HEARTBEAT_LOST` = 1 and treats the belt as uninspected until the heartbeat changes
  again. `INSPECTOR_STATE` = `FAULT` or `STOPPED` also means uninspected, but a stopped inspector
  (it wrote `STOPPED` before leaving) is not "lost". Acknowledged marks still fire.
- `PLC_ALIVE` changes every PLC scan; a counter that stands still for {timeout} ms means the PLC
  answers Modbus but runs no program (STOP mode): logged, state `DEGRADED`.
"""


def render_markdown(m: RegisterMap | None = None) -> str:
    """The content of docs/register-map.md."""
    m = m or default_map()
    ring = m.ring
    insp = [r for r in m.registers.values() if r.writer == "inspector"]
    plc = [r for r in m.registers.values() if r.writer == "plc"]
    plc_first, plc_count = m.span("plc")
    out = [
        "# PLC register map (Modbus TCP)",
        "",
        f"<!-- generated from firmware_io/{MAP_FILE} by `{REGENERATE}`; do not edit -->",
        "",
        f"Map version **{m.version}**. The source of truth is `firmware_io/{MAP_FILE}`; the Python client",
        "(`edge_inspector/plc/link.py`), the soft-PLC (`edge_inspector/plc/softplc.py`), the PLC program",
        f"(`firmware_io/{ST_FILE}`, its generated block) and this page derive from it, and",
        "`tests/test_plc_regmap.py` fails when one of them disagrees.",
        "",
        f"- Modbus table: **{m.table} registers** only (read: function 3, write: function 16).",
        "- Addresses are 0-based PDU addresses (holding register 0 is \"40001\" in 1-based tools).",
        "- 32-bit values (UDINT, DINT) take two registers: **big-endian words, high word first** (at",
        "  the lower address), each word big-endian as Modbus sends it. Signed values are two's complement.",
        "- Physical value = raw value x scale. Positions are DINT in 0.1 mm and **wrap modulo 2^32**:",
        "  compare them by the signed 32-bit difference, never by the raw values.",
        "- Each side writes only its own block; the soft-PLC answers a write into the PLC block with",
        "  exception 2 (illegal data address).",
        "",
        "| Block | Addresses | Meaning |",
        "| --- | --- | --- |",
    ]
    out += [f"| {b.name} | {b.first}..{b.last} | {b.meaning} |" for b in m.blocks.values()]
    out += ["", "## Registers written by the inspector", ""] + _rows(insp, m.table)
    out += [
        "",
        f"## Mark ring (written by the inspector): {ring.slots} slots at {ring.base}..{ring.last}",
        "",
        f"Slot `k` (0..{ring.slots - 1}) starts at `{ring.base} + k x {ring.stride}` and holds sequence"
        f" `s` with `k = (s - 1) mod {ring.slots}`. Offsets {ring.words}..{ring.stride - 1} of a slot are reserved.",
        "",
    ]
    out += _rows(list(ring.fields.values()), m.table, offset=True)
    out += ["", "| Slot | Addresses |", "| --- | --- |"]
    out += [f"| {k} | {ring.slot_address(k)}..{ring.slot_address(k) + ring.stride - 1} |" for k in range(ring.slots)]
    out += ["", "## Registers written by the PLC", ""] + _rows(plc, m.table)
    out += ["", "## Codes", ""]
    out += _codes("Inspector states (`INSPECTOR_STATE`; edge_inspector.mark.InspectorState)", m.states)
    out += _codes("Actions (ring field `ACTION`; edge_inspector.mark.Action)", m.actions, m.actuators)
    out += [
        "### Fault bits (`MARKER_FAULTS`)",
        "",
        "| Bit | Value | Name |",
        "| --- | --- | --- |",
    ]
    out += [f"| {b} | 0x{1 << b:04X} | `{name}` |" for name, b in m.faults.items()]
    out += [
        "",
        f"### Timing: heartbeat every {m.heartbeat_period_ms} ms, lost after {m.heartbeat_timeout_ms} ms;"
        f" fire list of {m.fire_list_size} marks",
        "",
    ]
    out.append(
        _RULES.format(
            slots=ring.slots, base=ring.base, stride=ring.stride, words=ring.words, fire_list=m.fire_list_size,
            version=m.version, period=m.heartbeat_period_ms, timeout=m.heartbeat_timeout_ms,
            plc_first=plc_first, plc_last=plc_first + plc_count - 1,
        )
    )
    out += [
        "## Soft-PLC",
        "",
        "`edge_inspector/plc/softplc.py` runs these rules on a real Modbus TCP server with a simulated",
        "belt and logs every fired or missed mark (JSON lines) with its placement error:",
        "",
        "```",
        "python -m edge_inspector.plc.softplc --port 5020 --log plc.jsonl --state plc-state.json \\",
        "    [--station STATION.toml | --speed-mm-s 1000 --marker-distance-mm 4000 --reject-distance-mm 8000]",
        "```",
        "",
        "`--state` is its RETAIN memory (last ack, fire list, belt position); `--seconds N` stops it",
        "after N seconds, SIGTERM or Ctrl-C at any time (exit 0, one summary line).",
        "",
        "## Changing the map",
        "",
        f"1. Edit `firmware_io/{MAP_FILE}` (raise `map.version` when the layout changes).",
        f"2. Run `{REGENERATE}`: rewrites this page and the block between",
        f"   `(* BEGIN REGISTER MAP` and `{ST_END}` in `firmware_io/{ST_FILE}`.",
        "   `--check` exits 1 and names every file that disagrees with the map.",
        "3. Load the regenerated program into the PLC, and run `pytest tests/test_plc_regmap.py tests/test_plc_link.py`.",
        "",
    ]
    return "\n".join(out)


def _st_const(name: str, iec_type: str, value: str, comment: str = "") -> str:
    line = f"    {name} : {iec_type} := {value};"
    return f"{line:<48}(* {comment} *)" if comment else line


def render_st_block(m: RegisterMap | None = None) -> str:
    """The generated constants block of the PLC program, markers included."""
    m = m or default_map()
    ring = m.ring
    out = [
        ST_BEGIN,
        "VAR_GLOBAL CONSTANT",
        _st_const("MAP_VERSION", "UINT", str(m.version), "map version; PLC_MAP_VERSION publishes it"),
        _st_const("HR_LAST", "UINT", str(m.hr_last), "highest holding register of the map"),
        _st_const("HEARTBEAT_TIMEOUT", "TIME", f"T#{m.heartbeat_timeout_ms}MS", "inspector heartbeat lost after"),
        _st_const("FIRE_LIST_SIZE", "UINT", str(m.fire_list_size), "marks between ack and fire"),
        "    (* register addresses (0-based; 32-bit values: high word here, low word at +1) *)",
    ]
    for r in m.registers.values():
        out.append(_st_const(f"REG_{r.name}", "UINT", str(r.address), _st_comment(r)))
    out += [
        "    (* mark ring: sequence s in slot (s - 1) MOD RING_SLOTS at RING_BASE + slot * SLOT_STRIDE *)",
        _st_const("RING_BASE", "UINT", str(ring.base)),
        _st_const("RING_SLOTS", "UINT", str(ring.slots)),
        _st_const("SLOT_STRIDE", "UINT", str(ring.stride)),
    ]
    for f in ring.fields.values():
        out.append(_st_const(f"SLOT_{f.name}", "UINT", str(f.address), _st_comment(f)))
    out.append("    (* inspector states *)")
    out += [_st_const(f"STATE_{k}", "UINT", str(v)) for k, v in m.states.items()]
    out.append("    (* actions *)")
    out += [_st_const(f"ACTION_{k}", "UINT", str(v), m.actuators[k]) for k, v in m.actions.items()]
    out.append("    (* MARKER_FAULTS bits *)")
    out += [_st_const(f"FAULT_{k}", "WORD", f"16#{1 << b:04X}", f"bit {b}") for k, b in m.faults.items()]
    out += ["END_VAR", ST_END]
    return "\n".join(out)


_ST_BLOCK = re.compile(re.escape("(* BEGIN REGISTER MAP") + r".*?" + re.escape(ST_END), re.S)


def st_block_of(text: str) -> str | None:
    """The generated block of a PLC program (markers included), or None when absent."""
    found = _ST_BLOCK.search(text)
    return found.group(0) if found else None


def source_root() -> Path:
    """The source tree: the folder holding firmware_io/ (the editable install's checkout)."""
    return Path(str(resources.files(MAP_PACKAGE))).resolve().parent


def check(root: Path, m: RegisterMap | None = None) -> list[str]:
    """Files under ``root`` that disagree with the map, each with what to do."""
    m = m or default_map()
    out = []
    doc = root / DOC_FILE
    if not doc.is_file() or doc.read_text(encoding="utf-8") != render_markdown(m):
        out.append(f"{doc}: differs from {MAP_FILE}; run {REGENERATE}")
    st = root / "firmware_io" / ST_FILE
    block = st_block_of(st.read_text(encoding="utf-8")) if st.is_file() else None
    if block != render_st_block(m):
        out.append(f"{st}: register block differs from {MAP_FILE} (or its markers are missing); run {REGENERATE}")
    return out


def write(root: Path, m: RegisterMap | None = None) -> list[Path]:
    """Rewrite docs/register-map.md and the ST program's register block; the files changed."""
    m = m or default_map()
    changed = []
    doc = root / DOC_FILE
    text = render_markdown(m)
    if not doc.is_file() or doc.read_text(encoding="utf-8") != text:
        doc.write_text(text, encoding="utf-8")
        changed.append(doc)
    st = root / "firmware_io" / ST_FILE
    prog = st.read_text(encoding="utf-8")
    if st_block_of(prog) is None:
        raise RegisterMapError(f"{st}: no '(* BEGIN REGISTER MAP' ... '{ST_END}' block to replace")
    new = _ST_BLOCK.sub(lambda _: render_st_block(m), prog, count=1)
    if new != prog:
        st.write_text(new, encoding="utf-8")
        changed.append(st)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_inspector.plc.regmap", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="rewrite docs/register-map.md and the ST register block")
    g.add_argument("--check", action="store_true", help="exit 1 naming every file that disagrees with the map")
    p.add_argument("--root", type=Path, default=None, help="source tree (default: the one holding firmware_io/)")
    a = p.parse_args(argv)
    root = a.root or source_root()
    try:
        m = default_map()
        if a.check:
            problems = check(root, m)
            for line in problems:
                print(line)
            return 1 if problems else 0
        if not (root / "docs").is_dir():
            print(f"{root}: no docs/ folder; give the source tree with --root", file=sys.stderr)
            return 2
        for path in write(root, m):
            print(f"wrote {path}")
    except RegisterMapError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
