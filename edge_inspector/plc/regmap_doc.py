"""The files derived from the register map: docs/register-map.md and the PLC program's register block.

``render_markdown`` writes the page, ``render_st_block`` the constants block between
``(* BEGIN REGISTER MAP`` and ``(* END REGISTER MAP *)`` in ``firmware_io/edge_inspector_marks.st``;
``check`` names every file that disagrees with the map, ``write`` rewrites them. The command::

    python -m edge_inspector.plc.regmap --write     # or --check: exits 1 naming what differs
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from pathlib import Path

from .regmap import MAP_FILE, MAP_PACKAGE, Field, RegisterMap, RegisterMapError, default_map

ST_FILE = "edge_inspector_marks.st"
DOC_FILE = Path("docs") / "register-map.md"
REGENERATE = "python -m edge_inspector.plc.regmap --write"
ST_BEGIN = f"(* BEGIN REGISTER MAP: generated from {MAP_FILE} by `{REGENERATE}`; do not edit *)"
ST_END = "(* END REGISTER MAP *)"
# the command's --help text, as when the command lived in regmap.py
DESCRIPTION = "The PLC register map: load and validate ``firmware_io/register_map.toml``, encode and decode."


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
6. A mark whose target the belt has already passed by more than the fire window when it is
   consumed is not fired: it is counted in `MARKS_MISSED` (and acknowledged). Fire list full ({fire_list} entries): the PLC
   stops acknowledging (fault bit `FIRE_LIST_FULL`) until an entry fires.
7. Firing: the PLC fires when the signed 32-bit difference `BELT_POSITION - target` becomes
   `>= 0` (positions wrap modulo 2^32: never compare raw values). It then counts `MARKS_FIRED`
   and sets `LAST_FIRED_SEQ`. When that difference is already above the fire window
   (`FIRE_WINDOW`, {fire_window:g} mm; a late scan, a stalled task) the spot has passed the
   actuator: the mark is counted in `MARKS_MISSED` and **not fired** (never somewhere else);
   a missed `*_END` action still ends its zone.

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
        f" fire list of {m.fire_list_size} marks; fire window {m.fire_window_mm:g} mm",
        "",
    ]
    out.append(
        _RULES.format(
            slots=ring.slots, base=ring.base, stride=ring.stride, words=ring.words, fire_list=m.fire_list_size,
            version=m.version, period=m.heartbeat_period_ms, timeout=m.heartbeat_timeout_ms,
            fire_window=m.fire_window_mm,
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
        _st_const("FIRE_WINDOW", "DINT", str(m.fire_window), f"0.1 mm ({m.fire_window_mm:g} mm): passed by more = missed"),
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
    p = argparse.ArgumentParser(prog="python -m edge_inspector.plc.regmap", description=DESCRIPTION)
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
