"""The soft-PLC: a real Modbus TCP server that plays the line PLC (docs/architecture.md section 8).

It runs the rules of ``firmware_io/edge_inspector_marks.st`` in Python, on registers laid out
from the register map: a simulated belt moves at a fixed speed, the mark ring is consumed in
sequence order (de-duplicated, acknowledged), every action is fired when the belt reaches
its target (belt position + actuator distance), and each event is logged as a JSON line::

    {"event": "fired", "seq": 7, "action": "ink", "belt_mm": 1234.5, "target_mm": 5234.5,
     "fired_at_mm": 5235.1, "error_mm": 0.6, ...}

so tests and ``edge-inspector eval`` can measure marking end to end. A target the belt passed by
more than the map's fire window when the scan gets to it (a late scan) is logged ``missed``
with ``late_by_mm``, never fired somewhere else. ``state_path`` is the
PLC's RETAIN memory (last ack, fire list, belt position, counters): a soft-PLC stopped and
started again fires every acknowledged mark exactly once.

Command line (``edge-inspector plc-sim`` runs the same)::

    python -m edge_inspector.plc.softplc --port 5020 --log plc.jsonl --state plc-state.json

Memory stays flat over a long run: the events kept in memory (``events``, ``fired``, ``missed``)
are the latest ``EVENTS_KEPT``; the log file has them all. ``--exit-with-parent PID`` stops it
when that process is gone (a child of an inspector that was killed).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from ..errors import InputError
from ..mark import Action, InspectorState, Mark
from .regmap import RegisterMap, default_map, dint_diff, from_words, wrap32

# pymodbus 3.10 renamed the datastore base class (slave -> device) and lets getValues/setValues
# answer with an exception code; older versions ask validate() first and take no codes.
try:
    from pymodbus.datastore import ModbusBaseDeviceContext as _BaseContext
except ImportError:
    from pymodbus.datastore import ModbusBaseSlaveContext as _BaseContext  # type: ignore[attr-defined,no-redef]
try:
    from pymodbus.constants import ExcCodes

    _ILLEGAL_FUNCTION: Any = ExcCodes.ILLEGAL_FUNCTION
    _ILLEGAL_ADDRESS: Any = ExcCodes.ILLEGAL_ADDRESS
except ImportError:  # unreachable there: validate() refused the request already
    _ILLEGAL_FUNCTION = _ILLEGAL_ADDRESS = []

log = structlog.get_logger(__name__)

_HOLDING_FUNCTIONS = (3, 6, 16, 23)  # read, write single, write multiple, read/write multiple
_STATE_VERSION = 1
EVENTS_KEPT = 1_000  # events kept in memory (the log file keeps them all)


@dataclass
class FireEntry:
    """An acknowledged mark waiting for its actuator. Positions are raw DINT (0.1 mm) values."""

    seq: int
    action: int
    belt: int
    across: int
    class_id: int
    hide_id: int
    length: int
    target: int


def _action_name(code: int) -> str:
    """"ink", "reject_hide", ...; "unknown(9)" for a code the map does not define."""
    try:
        return Action(code).name.lower()
    except ValueError:
        return f"unknown({code})"


class _Registers(_BaseContext):
    """The soft-PLC's holding registers: one array over the map's blocks, nothing else.

    Reads may cover any block; writes only the inspector's block (exception 2 otherwise).
    Every access is counted by (function, address, count) so tests can check that clients
    use the map's addresses only.
    """

    def __init__(self, m: RegisterMap, lock: threading.RLock) -> None:
        self.map = m
        self.words = [0] * (m.hr_last + 1)
        self.lock = lock
        self.accesses: Counter[tuple[int, int, int]] = Counter()
        self.on_write: list[int] = []  # addresses written by clients since the last tick

    def _in_block(self, address: int, count: int, writer: str | None) -> bool:
        blocks = [b for name, b in self.map.blocks.items() if writer in (None, name)]
        return any(b.first <= address and address + count - 1 <= b.last for b in blocks)

    def validate(self, func_code: int, address: int, count: int = 1) -> bool:
        """pymodbus < 3.10 asks this before a read or a write (function 6 or 16)."""
        writer = self.map.ring.writer if func_code in (6, 16) else None
        return func_code in _HOLDING_FUNCTIONS and self._in_block(address, count, writer)

    def getValues(self, func_code: int, address: int, count: int = 1) -> Any:  # noqa: N802
        if func_code not in _HOLDING_FUNCTIONS:
            return _ILLEGAL_FUNCTION
        if not self._in_block(address, count, None):
            return _ILLEGAL_ADDRESS
        with self.lock:
            self.accesses[(func_code, address, count)] += 1
            return self.words[address : address + count]

    def setValues(self, func_code: int, address: int, values: list[int] | list[bool]) -> Any:  # noqa: N802
        if func_code not in _HOLDING_FUNCTIONS:
            return _ILLEGAL_FUNCTION
        if not self._in_block(address, len(values), self.map.ring.writer):
            return _ILLEGAL_ADDRESS
        with self.lock:
            self.accesses[(func_code, address, len(values))] += 1
            self.words[address : address + len(values)] = [int(v) for v in values]
        return None

    def put(self, name: str, value: float) -> None:
        r = self.map.reg(name)
        self.words[r.address : r.address + r.count] = r.encode(value)

    def get(self, name: str) -> float | int:
        r = self.map.reg(name)
        return r.decode(self.words[r.address : r.address + r.count])


class SoftPlc:
    """A simulated line PLC behind a real pymodbus Modbus TCP server on its own thread.

    ``port=0`` picks a free port (``port`` tells which once started). The server answers
    ``unit_id`` only: a request to another unit gets exception 0x0B (gateway target device
    failed to respond). ``heartbeat_timeout_s`` defaults to the map's heartbeat timeout.
    ``start_belt_mm``: the belt position of a PLC without RETAIN state (e.g. near the DINT wrap).

    For tests: ``fired``, ``missed``, ``events`` (what the log file gets), ``fire_list``,
    ``set_consuming()``, ``force()`` a PLC register, ``read()`` a register, ``slot_mark()``,
    ``accesses()`` (client requests by function, address, count).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unit_id: int = 1,
        speed_mm_s: float = 1000.0,
        marker_distance_mm: float = 4000.0,
        reject_distance_mm: float = 8000.0,
        log_path: str | Path | None = None,
        state_path: str | Path | None = None,
        tick_s: float = 0.001,
        heartbeat_timeout_s: float | None = None,
        consume: bool = True,
        start_belt_mm: float = 0.0,
        register_map: RegisterMap | None = None,
    ) -> None:
        self.map = register_map or default_map()
        self.host = host
        self._port = port
        self.unit_id = unit_id
        self.speed_mm_s = speed_mm_s
        self.tick_s = tick_s
        self.heartbeat_timeout_s = (
            self.map.heartbeat_timeout_ms / 1000.0 if heartbeat_timeout_s is None else heartbeat_timeout_s
        )
        self.log_path = Path(log_path) if log_path else None
        self.state_path = Path(state_path) if state_path else None
        pos = self.map.ring.fields["BELT_POS"]
        self._distance = {
            "marker": pos.to_raw(marker_distance_mm),
            "reject_gate": pos.to_raw(reject_distance_mm),
        }
        self._lock = threading.RLock()
        self._regs = _Registers(self.map, self._lock)
        self._consuming = consume
        self._forced: dict[str, float] = {}
        # RETAIN memory (state_path)
        self.last_ack = 0
        self._queue: list[tuple[int, int, FireEntry]] = []  # heap of (due count, seq, entry): the fire list
        self.marks_fired = 0
        self.marks_missed = 0
        self.last_fired_seq = 0
        self._belt0_mm = start_belt_mm
        # scan state
        self._t0 = 0.0
        self._alive = 0
        self._heartbeat = 0
        self._heartbeat_t = 0.0
        self._heartbeat_lost = False
        self._persisted_t = 0.0
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self.fired: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self.missed: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self.counts: Counter[str] = Counter()  # events since start, by kind (not bounded like ``events``)
        self._log_file: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_async: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> "SoftPlc":
        """Restore the RETAIN state, listen, start the scan loop; returns once listening."""
        self._restore()
        self._ready.clear()
        self._error = None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("a", encoding="utf-8")
        self._t0 = self._heartbeat_t = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="soft-plc", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            self.stop()
            raise RuntimeError(f"soft-PLC could not listen on {self.host}:{self._port}: {self._error}")
        self._event("start", belt_mm=self._mm(self._belt_raw(time.monotonic())))
        return self

    def stop(self) -> None:
        """Stop the scan loop and the server (clients are disconnected); persist; idempotent."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop_async is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_async.set)
        self._thread.join(10.0)
        self._thread = None
        if self._ready.is_set() and self._error is None:
            now = time.monotonic()
            self._belt0_mm, self._t0 = self._belt_mm_at(now), now
            self._persist()
            self._event("stop", belt_mm=self._mm(self._belt_raw(now)), queued=len(self._queue))
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "SoftPlc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.host}:{self._port}"

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop_async = asyncio.Event()
        context = ModbusServerContext({self.unit_id: self._regs}, single=False)
        server = ModbusTcpServer(context, address=(self.host, self._port))
        if not await server.listen():
            raise OSError(f"cannot listen on {self.host}:{self._port}")
        sockets = getattr(server.transport, "sockets", None) or []
        if sockets:
            self._port = int(sockets[0].getsockname()[1])
        self._ready.set()
        try:
            while not self._stop_async.is_set():
                try:
                    self._scan(time.monotonic())
                except Exception:  # a PLC keeps scanning whatever a client wrote
                    log.exception("soft-plc scan failed", plc=self.address)
                try:
                    await asyncio.wait_for(self._stop_async.wait(), self.tick_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            await server.shutdown()

    # -- controls for tests and the command line ----------------------------------------------
    def set_consuming(self, on: bool) -> None:
        """False: a PLC that stops taking marks from the ring (it fills up)."""
        self._consuming = on

    @property
    def heartbeat_lost(self) -> bool:
        return self._heartbeat_lost

    @property
    def belt_mm(self) -> float:
        """The belt position now (mm, not wrapped)."""
        return self._belt_mm_at(time.monotonic())

    def force(self, name: str, value: float | None) -> None:
        """Force a PLC register to ``value`` (as a PLC IDE forces a variable); None releases it."""
        if self.map.reg(name).writer != "plc":
            raise ValueError(f"{name} is written by the inspector; only PLC registers can be forced")
        with self._lock:
            if value is None:
                self._forced.pop(name, None)
            else:
                self._forced[name] = value
                self._regs.put(name, value)

    def read(self, name: str) -> float | int:
        """A register's current value (physical units)."""
        with self._lock:
            return self._regs.get(name)

    def slot_words(self, slot: int) -> list[int]:
        a = self.map.ring.slot_address(slot)
        with self._lock:
            return self._regs.words[a : a + self.map.ring.words]

    def slot_mark(self, slot: int) -> Mark:
        return self.map.decode_mark(self.slot_words(slot))

    def accesses(self) -> Counter[tuple[int, int, int]]:
        """Client requests so far by (function code, address, count)."""
        with self._lock:
            return Counter(self._regs.accesses)

    # -- the scan -----------------------------------------------------------------------------
    def _belt_mm_at(self, t: float) -> float:
        return self._belt0_mm + self.speed_mm_s * (t - self._t0)

    def _belt_raw(self, t: float) -> int:
        return self.map.reg("BELT_POSITION").to_raw(self._belt_mm_at(t))

    def _belt_counts(self, t: float) -> int:
        """The belt position in counts, not wrapped: the order in which targets come due."""
        return self.map.reg("BELT_POSITION").to_raw(self._belt_mm_at(t), wrap=False)

    @property
    def fire_list(self) -> list[FireEntry]:
        """Acknowledged marks waiting for their actuator, soonest first."""
        with self._lock:
            return [e for _, _, e in sorted(self._queue)]

    def _mm(self, raw: int) -> float:
        return float(self.map.reg("BELT_POSITION").to_physical(raw))

    def _scan(self, now: float) -> None:
        """One PLC scan, the same four steps as FB_EdgeInspectorMarks."""
        counts = self._belt_counts(now)
        pos = wrap32(counts)
        with self._lock:
            self._watch_heartbeat(now, pos)
            taken, faults = self._consume(pos, counts) if self._consuming else (0, 0)
            fired = self._fire(counts)
            self._publish(pos, faults)
        if taken or fired or now - self._persisted_t > 0.1:
            self._persisted_t = now
            self._persist(now)

    def _watch_heartbeat(self, now: float, pos: int) -> None:
        """HEARTBEAT_LOST: no heartbeat change within the timeout while the inspector is not STOPPED."""
        hb = int(self._regs.get("INSPECTOR_HEARTBEAT"))
        if hb != self._heartbeat:
            self._heartbeat, self._heartbeat_t = hb, now
        stopped = self._regs.get("INSPECTOR_STATE") == InspectorState.STOPPED
        lost = not stopped and now - self._heartbeat_t > self.heartbeat_timeout_s
        if lost != self._heartbeat_lost:
            self._heartbeat_lost = lost
            self._event("heartbeat_lost" if lost else "heartbeat_ok", belt_mm=self._mm(pos))

    def _consume(self, pos: int, counts: int) -> tuple[int, int]:
        """Take lastAck + 1, lastAck + 2, ... from the ring: (marks taken, fault bits)."""
        m, ring, fault = self.map, self.map.ring, self.map.faults
        version = self._regs.get("MAP_VERSION")
        if version == 0:  # no inspector has connected yet
            return 0, 0
        if version != m.version:
            return 0, 1 << fault["MAP_VERSION"]
        last_written = int(self._regs.get("LAST_WRITTEN_SEQ"))
        taken, faults = 0, 0
        while taken < ring.slots and last_written > self.last_ack:
            seq = self.last_ack + 1
            a = ring.slot_address(ring.slot_of(seq))
            words = self._regs.words[a : a + ring.words]
            if ring.fields["SEQ"].decode(words) != seq:
                faults |= 1 << fault["SEQ_MISMATCH"]
                break
            if len(self._queue) >= m.fire_list_size:
                faults |= 1 << fault["FIRE_LIST_FULL"]
                break
            self._take(seq, words, pos, counts)
            taken += 1
        return taken, faults

    def _take(self, seq: int, words: list[int], pos: int, counts: int) -> None:
        f = self.map.ring.fields
        raw = {name: from_words(words[fl.address : fl.address + fl.count], fl.type) for name, fl in f.items()}
        actuator = self.map.actuators.get(_action_name(raw["ACTION"]).upper(), "marker")  # unknown: ST's ELSE
        target = wrap32(raw["BELT_POS"] + self._distance[actuator])
        e = FireEntry(seq, raw["ACTION"], raw["BELT_POS"], raw["ACROSS_POS"], raw["CLASS_ID"], raw["HIDE_ID"],
                      raw["LENGTH"], target)
        late = dint_diff(pos, target)
        if late > self.map.fire_window:  # passed: missed (within the window it fires this scan)
            self.marks_missed = wrap32(self.marks_missed + 1, signed=False)
            self._event("missed", **self._entry_json(e), late_by_mm=self._mm(late))
        else:
            heapq.heappush(self._queue, (counts - late, seq, e))
        self.last_ack = seq

    def _fire(self, counts: int) -> bool:
        """Fire every entry whose target the belt reached (``BELT_POSITION - target >= 0``).

        An entry passed by more than the fire window (the scan came late) is missed, not fired.
        """
        fired = False
        window = self.map.fire_window
        while self._queue and self._queue[0][0] <= counts:
            due, _, e = heapq.heappop(self._queue)
            if counts - due > window:
                self.marks_missed = wrap32(self.marks_missed + 1, signed=False)
                self._event("missed", **self._entry_json(e), late_by_mm=self._mm(counts - due),
                            at_mm=self._mm(wrap32(counts)), why="passed the actuator between two scans")
                fired = True
                continue
            self.marks_fired = wrap32(self.marks_fired + 1, signed=False)
            self.last_fired_seq = e.seq
            self._event("fired", **self._entry_json(e), fired_at_mm=self._mm(wrap32(counts)),
                        error_mm=self._mm(counts - due))
            fired = True
        return fired

    def _entry_json(self, e: FireEntry) -> dict[str, Any]:
        f = self.map.ring.fields
        return {
            "seq": e.seq,
            "action": _action_name(e.action),
            "belt_mm": self._mm(e.belt),
            "across_mm": f["ACROSS_POS"].to_physical(e.across),
            "class_id": e.class_id,
            "hide_id": e.hide_id,
            "length_mm": f["LENGTH"].to_physical(e.length),
            "target_mm": self._mm(e.target),
        }

    def _publish(self, pos: int, faults: int) -> None:
        self._alive = (self._alive + 1) & 0xFFFF
        values: dict[str, float] = {
            "PLC_MAP_VERSION": self.map.version,
            "PLC_ALIVE": self._alive,
            "LAST_ACK_SEQ": self.last_ack,
            "BELT_POSITION": self._mm(pos),
            "BELT_SPEED": self.speed_mm_s,
            "LINE_RUNNING": int(self.speed_mm_s != 0),
            "MARKER_FAULTS": faults,
            "HEARTBEAT_LOST": int(self._heartbeat_lost),
            "FIRE_LIST_COUNT": len(self._queue),
            "MARKS_FIRED": self.marks_fired,
            "MARKS_MISSED": self.marks_missed,
            "LAST_FIRED_SEQ": self.last_fired_seq,
        }
        values.update(self._forced)
        for name, v in values.items():
            self._regs.put(name, v)

    # -- events and RETAIN memory -------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> None:
        ev = {"event": kind, **fields, "t": round(time.time(), 6)}
        self.counts[kind] += 1
        self.events.append(ev)
        if kind == "fired":
            self.fired.append(ev)
        elif kind == "missed":
            self.missed.append(ev)
        if self._log_file is not None:
            self._log_file.write(json.dumps(ev) + "\n")
            self._log_file.flush()

    def _persist(self, now: float | None = None) -> None:
        """Write the RETAIN state atomically (temporary file, then rename).

        Called after every scan that took or fired a mark, and every 0.1 s for the belt
        position. No fsync: it survives the soft-PLC process dying, not a power loss.
        """
        if self.state_path is None:
            return
        with self._lock:
            state = {
                "version": _STATE_VERSION,
                "belt_mm": self._belt_mm_at(time.monotonic() if now is None else now),
                "last_ack": self.last_ack,
                "marks_fired": self.marks_fired,
                "marks_missed": self.marks_missed,
                "last_fired_seq": self.last_fired_seq,
                "fire_list": [vars(e) for _, _, e in self._queue],  # not asdict(): ms per call at 500 entries
            }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def _restore(self) -> None:
        if self.state_path is None or not self.state_path.is_file():
            return
        try:
            s = json.loads(self.state_path.read_text(encoding="utf-8"))
            if s.get("version") != _STATE_VERSION:
                raise ValueError(f"state version {s.get('version')!r}, expected {_STATE_VERSION}")
            self._belt0_mm = float(s["belt_mm"])
            self.last_ack = int(s["last_ack"])
            self.marks_fired = int(s["marks_fired"])
            self.marks_missed = int(s["marks_missed"])
            self.last_fired_seq = int(s["last_fired_seq"])
            counts = self.map.reg("BELT_POSITION").to_raw(self._belt0_mm, wrap=False)
            entries = [FireEntry(**e) for e in s["fire_list"]]
            self._queue = [(counts + dint_diff(e.target, wrap32(counts)), e.seq, e) for e in entries]
            heapq.heapify(self._queue)
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"not a soft-PLC state file ({e})", path=self.state_path,
                             hint="remove it to start with an empty PLC memory") from None


if __name__ == "__main__":  # python -m edge_inspector.plc.softplc: the same as edge-inspector plc-sim
    from .plcsim import main

    sys.exit(main())
