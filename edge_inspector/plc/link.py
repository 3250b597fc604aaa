"""PlcLink: the Modbus TCP client that brings marks from the outbox to the line PLC.

One daemon thread owns one pymodbus client. Every heartbeat period (``[plc] heartbeat_ms``)::

    write MAP_VERSION, INSPECTOR_HEARTBEAT (+1), INSPECTOR_STATE     one request
    read the PLC block (ack, encoder, speed, line running, faults)   one request
    acknowledge the outbox up to LAST_ACK_SEQ
    write pending marks into the ring, each slot in one request, then LAST_WRITTEN_SEQ

A slot is written only when its previous occupant is acknowledged (``seq - slots <= ack``);
a full ring is backpressure (counted, logged, state DEGRADED), never an overwrite. After a
(re)connect everything from ack + 1 is written again: the PLC de-duplicates by sequence.
The rules are in docs/register-map.md; addresses come from the register map only.

Belt frames (docs/marking.md): ``epoch`` numbers the PLC's encoder frame, 1 from the first
reading. It moves on when the frame is not the one the marks were planned in: the PLC lost its
memory, or its encoder is not where the last reading and the belt speed allow (reset, jump, a
replaced PLC). Marks carry the epoch they were planned in; the link writes a mark only in its own
epoch (or one without an epoch), so the owner (edge_inspector/dispatch.py) re-bases or closes
the others first.

    link = PlcLink(station.plc, Outbox(path))
    link.start(); link.set_state(InspectorState.RUNNING)
    link.submit(marks)            # persisted before return, sent by the thread
    link.belt_mm()                # PLC encoder now (mm), extrapolated with the belt speed
    link.stop()                   # deliver what it can, write STOPPED, close
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from ..config import Plc
from ..mark import InspectorState, Mark
from .modbus import EXCEPTIONS, TRACE as _TRACE, UNIT_KW, LinkError, Throttle as _Throttle
from .outbox import Outbox
from .regmap import RegisterMap, default_map, dint_diff, from_words

log = structlog.get_logger(__name__)

_BACKOFF_FIRST_S = 0.1
_RING_POLL_S = 0.01  # ring full while the PLC is consuming: look at its ack this often
_FRAME_TOL_MM = 100.0  # encoder continuity: slack beyond what the belt speed allows ...
_FRAME_TOL_S = 0.3  # ... or this much belt travel, whichever is larger


class PlcLink:
    """The inspector's side of the PLC contract (docs/architecture.md section 8)."""

    def __init__(self, cfg: Plc, outbox: Outbox, *, register_map: RegisterMap | None = None) -> None:
        if not cfg.host:
            raise ValueError("plc.host is empty: no PLC is configured")
        self.cfg = cfg
        self.outbox = outbox
        self.map = register_map or default_map()
        self.where = f"{cfg.host}:{cfg.port} unit {cfg.unit_id}"
        self._hb_first, self._hb_names = self._contiguous(("MAP_VERSION", "INSPECTOR_HEARTBEAT", "INSPECTOR_STATE"))
        self._plc_first, self._plc_count = self.map.span("plc")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: ModbusTcpClient | None = None
        self._throttle = _Throttle()
        self._wanted = InspectorState.STOPPED
        self._problems: frozenset[str] = frozenset()  # replaced, never mutated: read by other threads
        self._hb = 0
        # ring bookkeeping (link thread)
        self._fresh = True  # first PLC read after a connect
        self._trusted_ack: int | None = None
        self._next_write = 1
        self._written_max = 0
        self._plc_written_at_connect = 0
        self._alive: tuple[int, float] | None = None  # PLC_ALIVE and when it last changed
        self._ack_moved = False  # the last PLC read advanced the acknowledgement
        self._faults = 0
        self._rx = bytearray()  # bytes received during the current request (pymodbus trace_packet)
        # belt frame (see module doc)
        self.epoch = 0  # 0 until the first encoder reading
        self._epoch_since = time.time()
        self._last_reading: tuple[float, float, int] | None = None  # (mm, speed, monotonic ns) of the latest read
        self._at_connect: tuple[int, float, float | None] = (0, self._epoch_since, None)  # epoch, since, last mm
        # readings (any thread, under _lock)
        self._plc: dict[str, float | int] = {}
        self._belt_raw: int | None = None
        self._belt_mm: float | None = None
        self._belt_ns = 0
        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._last_error = ""

    def _contiguous(self, names: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        """First address of registers that must be written in one request; they must be adjacent."""
        regs = sorted((self.map.reg(n) for n in names), key=lambda r: r.address)
        for a, b in zip(regs, regs[1:]):
            if b.address != a.last + 1:
                raise ValueError(f"register map: {a.name} and {b.name} must be adjacent (heartbeat write)")
        return regs[0].address, tuple(r.name for r in regs)

    # -- the pipeline's side ------------------------------------------------------------------
    def start(self) -> "PlcLink":
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=f"plc-link {self.cfg.host}:{self.cfg.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self, drain_timeout_s: float = 2.0) -> bool:
        """Deliver what is pending (up to ``drain_timeout_s``), write state STOPPED, close.

        Returns True when nothing is left pending. Undelivered marks stay in the outbox.
        """
        drained = self.drain(drain_timeout_s) if self._connected.is_set() else not self.outbox.counts()["pending"]
        self._wanted = InspectorState.STOPPED
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(5.0, 3 * self.cfg.timeout_s))
            self._thread = None
        return drained

    def submit(self, marks: list[Mark]) -> list[Mark]:
        """Persist ``marks`` (numbered by the outbox) and wake the sender; never waits for the PLC.

        Marks the ring cannot carry (a value out of its register's range) are logged and
        dropped; duplicates by key are skipped. Returns the accepted marks with ``seq`` set.
        """
        ok = [m for m in marks if self._encodable(m)]
        accepted = self.outbox.add(ok)
        with self._lock:
            self._counts["marks_submitted"] += len(accepted)
            self._counts["marks_duplicate"] += len(ok) - len(accepted)
        if accepted:
            self._wake.set()
        return accepted

    def _encodable(self, m: Mark) -> bool:
        try:
            self.map.encode_mark(m)
        except ValueError as e:
            self._error("mark_out_of_range", f"mark {m.key or m.action.name} cannot be sent: {e}")
            return False
        return True

    def set_state(self, state: InspectorState) -> None:
        """The pipeline's state; the link reports DEGRADED instead of RUNNING while it has trouble."""
        self._wanted = InspectorState(state)
        self._wake.set()

    @property
    def state(self) -> InspectorState:
        """The state written with the next heartbeat."""
        if self._problems and self._wanted == InspectorState.RUNNING:
            return InspectorState.DEGRADED
        return self._wanted

    def wait_connected(self, timeout: float) -> bool:
        """True once the PLC answered a heartbeat and a read of its block."""
        return self._connected.wait(timeout)

    def drain(self, timeout_s: float) -> bool:
        """Wait until the PLC acknowledged every mark in the outbox; False on timeout."""
        end = time.monotonic() + timeout_s
        while self.outbox.counts()["pending"]:
            if time.monotonic() >= end:
                return False
            self._wake.set()
            time.sleep(min(0.02, self.cfg.heartbeat_ms / 1000.0))
        return True

    def belt_mm(self, at_ns: int | None = None) -> float | None:
        """PLC belt position (mm, unwrapped) at ``at_ns`` (time.monotonic_ns(); default now).

        The last encoder reading extrapolated with the last speed reading; None before the
        first reading.
        """
        with self._lock:
            if self._belt_mm is None:
                return None
            t = time.monotonic_ns() if at_ns is None else at_ns
            return self._belt_mm + float(self._plc.get("BELT_SPEED", 0.0)) * (t - self._belt_ns) / 1e9

    @property
    def speed_mm_s(self) -> float | None:
        with self._lock:
            v = self._plc.get("BELT_SPEED")
        return None if v is None else float(v)

    @property
    def line_running(self) -> bool | None:
        with self._lock:
            v = self._plc.get("LINE_RUNNING")
        return None if v is None else bool(v)

    def stats(self) -> dict[str, Any]:
        """Counters and the latest PLC readings, e.g. for the run summary and metrics.

        ``connected``, ``state``, ``problems`` (what makes it DEGRADED), ``connects``/``reconnects``,
        ``heartbeats``, ``marks_submitted``/``marks_duplicate`` (skipped by key), ``marks_sent``
        (slot writes, resends included), ``marks_acked``, ``resends``, ``ring_full_waits``,
        ``errors`` (count by kind), ``last_error``, ``pending`` (outbox), ``plc_ack`` (trusted),
        every PLC register as ``plc_<name>`` (``plc_last_fired_seq``, ``plc_marks_missed``, ...),
        ``plc_faults`` (names of the set fault bits) and ``belt_mm``.
        """
        with self._lock:
            plc = dict(self._plc)
            out: dict[str, Any] = {
                "connected": self._connected.is_set(),
                "plc": self.where,
                "state": self.state.name.lower(),
                "problems": sorted(self._problems),
                **{k: self._counts[k] for k in ("connects", "reconnects", "heartbeats", "marks_submitted",
                                               "marks_duplicate", "marks_sent", "marks_acked", "resends",
                                               "ring_full_waits", "frame_changes", "marks_lost_in_plc",
                                               "bad_replies")},
                "errors": dict(self._errors),
                "last_error": self._last_error,
            }
        out["pending"] = self.outbox.counts()["pending"]
        out["plc_faults"] = self.map.fault_names(int(plc.get("MARKER_FAULTS", 0)))
        out["plc_ack"] = self._trusted_ack
        out.update({("" if k.startswith("PLC_") else "plc_") + k.lower(): v for k, v in plc.items()})
        out["belt_mm"] = self.belt_mm()
        out["epoch"] = self.epoch
        return out

    # -- the link thread ----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = _BACKOFF_FIRST_S
        next_hb = 0.0
        while not self._stopping.is_set():
            try:
                if self._client is None:
                    self._connect()
                now = time.monotonic()
                if now >= next_hb:
                    next_hb = now + self.cfg.heartbeat_ms / 1000.0
                    self._cycle()
                elif self._draining_ring():
                    self._read_plc()
                    self._send()
                else:
                    self._send()
                backoff = _BACKOFF_FIRST_S
            except Exception as e:  # the thread must outlive any one failure: log, reconnect, go on
                kind, text = (e.kind, str(e)) if isinstance(e, LinkError) else ("internal", f"{type(e).__name__}: {e}")
                if kind == "internal":
                    log.exception("plc link: unexpected error", plc=self.where)
                self._error(kind, text)
                self._disconnect()
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                next_hb = 0.0
                continue
            wait = next_hb - time.monotonic()
            self._wake.wait(max(0.0, min(wait, _RING_POLL_S) if self._draining_ring() else wait))
            self._wake.clear()
        self._close()

    def _draining_ring(self) -> bool:
        """Ring full but the PLC is taking marks: read its ack sooner than the next heartbeat."""
        return self._ack_moved and "ring_full" in self._problems

    def _close(self) -> None:
        """Say STOPPED to the PLC when connected, then close."""
        if self._client is not None and self._connected.is_set():
            try:
                self._heartbeat()
            except LinkError as e:
                self._error(e.kind, str(e))
        self._disconnect(quiet=True)

    def _connect(self) -> None:
        host, port, t = self.cfg.host, self.cfg.port, self.cfg.timeout_s
        try:  # pymodbus only says "failed": a plain connect tells refused from timeout
            socket.create_connection((host, port), timeout=t).close()
        except ConnectionRefusedError:
            raise LinkError("connect_refused", f"PLC {self.where}: connection refused (nothing listens on port {port})") from None
        except TimeoutError:
            raise LinkError("connect_timeout", f"PLC {self.where}: no answer to connect within {t:g} s (plc.host, network)") from None
        except OSError as e:
            raise LinkError("connect_error", f"PLC {self.where}: cannot connect: {e.strerror or e}") from None
        trace = {"trace_packet": self._trace} if _TRACE else {}
        client = ModbusTcpClient(host, port=port, timeout=t, retries=0, **trace)
        if not client.connect():
            raise LinkError("connect_error", f"PLC {self.where}: Modbus connect failed")
        self._client = client
        self._fresh = True
        self._alive = None
        self._at_connect = (self.epoch, self._epoch_since, self._last_reading[0] if self._last_reading else None)
        self._plc_written_at_connect = int(self._read("LAST_WRITTEN_SEQ"))

    def _trace(self, sending: bool, data: bytes) -> bytes:
        """pymodbus trace_packet: keep what came back, to tell garbage from silence."""
        if not sending:
            self._rx += data[:64]
        return data

    def _disconnect(self, quiet: bool = False) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._connected.is_set():
            self._connected.clear()
            (log.info if quiet else log.warning)("plc disconnected", plc=self.where)

    def _cycle(self) -> None:
        self._heartbeat()
        self._read_plc()
        if not self._connected.is_set():
            self._connected.set()
            with self._lock:
                self._counts["connects"] += 1
                if self._counts["connects"] > 1:
                    self._counts["reconnects"] += 1
            log.info("plc connected", plc=self.where, ack=self._trusted_ack, pending=self.outbox.counts()["pending"])
        self._send()

    # -- requests -----------------------------------------------------------------------------
    def _describe(self, address: int, count: int) -> str:
        first, last = self.map.owner(address), self.map.owner(address + count - 1)
        names = first if first == last else f"{first}..{last}"
        return f"{names} (address {address}, {count} register{'s' if count > 1 else ''})"

    def _request(self, function: str, address: int, count: int, call: Callable[..., Any]) -> Any:
        """One Modbus request; any failure becomes a LinkError naming PLC, unit, function, registers."""
        what = f"PLC {self.where}: {function} {self._describe(address, count)}"
        self._rx.clear()
        try:
            rr = call(**{UNIT_KW: self.cfg.unit_id})
        except ModbusIOException:
            raise self._silent_or_garbage(what) from None
        except (ModbusException, OSError) as e:
            raise LinkError("connection", f"{what}: {e}") from None
        if isinstance(rr, ModbusIOException):  # older pymodbus returns it instead of raising
            raise self._silent_or_garbage(what)
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0) or 0)
            name = EXCEPTIONS.get(code, "unknown exception")
            if code in (10, 11):
                raise LinkError("wrong_unit", f"{what}: exception {code} ({name}): no device with unit id"
                                f" {self.cfg.unit_id} behind {self.cfg.host}:{self.cfg.port}; check plc.unit_id")
            raise LinkError("exception_response", f"{what}: exception {code} ({name})")
        return rr

    def _silent_or_garbage(self, what: str) -> LinkError:
        """No valid reply: nothing came back (silence), or bytes that are no Modbus reply (garbage)."""
        if self._rx:
            with self._lock:
                self._counts["bad_replies"] += 1
            head = bytes(self._rx[:16]).hex(" ")
            return LinkError("bad_reply", f"{what}: the reply is not a Modbus TCP response to this request"
                             f" ({len(self._rx)} bytes: {head}{' ...' if len(self._rx) > 16 else ''});"
                             " another device or service on this port? check plc.host and plc.port")
        return LinkError("no_response", f"{what}: no response within {self.cfg.timeout_s:g} s"
                         f" (a PLC that ignores unit id {self.cfg.unit_id}? check plc.unit_id)")

    def _registers(self, rr: Any, address: int, count: int) -> list[int]:
        """The registers of a read reply; a reply with fewer than asked is a LinkError, not an IndexError."""
        words = list(getattr(rr, "registers", None) or [])
        if len(words) < count:
            with self._lock:
                self._counts["bad_replies"] += 1
            raise LinkError("short_reply", f"PLC {self.where}: read {self._describe(address, count)}: the reply"
                            f" carries {len(words)} register{'s' if len(words) != 1 else ''}, {count} were asked;"
                            " the PLC's Modbus server does not map the whole register block (docs/register-map.md)")
        return words[:count]

    def _read(self, name: str) -> float | int:
        r = self.map.reg(name)
        c = self._client
        assert c is not None
        rr = self._request("read", r.address, r.count, lambda **kw: c.read_holding_registers(r.address, count=r.count, **kw))
        return r.decode(self._registers(rr, r.address, r.count))

    def _write(self, address: int, words: list[int]) -> None:
        c = self._client
        assert c is not None
        self._request("write", address, len(words), lambda **kw: c.write_registers(address, words, **kw))

    def _heartbeat(self) -> None:
        self._hb = (self._hb + 1) & 0xFFFF
        values = {"MAP_VERSION": self.map.version, "INSPECTOR_HEARTBEAT": self._hb, "INSPECTOR_STATE": int(self.state)}
        self._write(self._hb_first, [w for n in self._hb_names for w in self.map.reg(n).encode(values[n])])
        with self._lock:
            self._counts["heartbeats"] += 1

    def _read_plc(self) -> None:
        c = self._client
        assert c is not None
        first, count = self._plc_first, self._plc_count
        t0 = time.monotonic_ns()
        rr = self._request("read", first, count, lambda **kw: c.read_holding_registers(first, count=count, **kw))
        t_ns = (t0 + time.monotonic_ns()) // 2
        words = self._registers(rr, first, count)
        vals = {r.name: self.map.decode(r.name, words, first) for r in self.map.registers.values() if r.writer == "plc"}
        pos = self.map.reg("BELT_POSITION")
        raw = from_words(words[pos.address - first : pos.address - first + pos.count], pos.type)
        with self._lock:
            self._plc = vals
            if self._belt_raw is None or self._belt_mm is None:
                self._belt_mm = float(pos.to_physical(raw))
            else:  # unwrap: the encoder counts modulo 2^32
                self._belt_mm += float(pos.to_physical(dint_diff(raw, self._belt_raw)))
            self._belt_raw, self._belt_ns = raw, t_ns
        self._check_frame(float(vals["BELT_SPEED"]), t_ns)
        self._check_alive(int(vals["PLC_ALIVE"]))
        self._check_faults(int(vals["MARKER_FAULTS"]))
        self._check_map_version(int(vals["PLC_MAP_VERSION"]))
        self._take_ack(int(vals["LAST_ACK_SEQ"]))
        self._fresh = False

    def _check_frame(self, speed: float, t_ns: int) -> None:
        """Epoch 1 at the first reading; a new epoch when the encoder is not where it can be.

        From the previous reading (position p, speed v, dt ago) the belt can be anywhere in
        [p - tol, p + max(|v|, |speed|) x dt + tol] (it may have stopped; a PLC restarted from its
        RETAIN memory resumes where it stopped). Outside: reset, jump or another PLC.
        """
        with self._lock:
            now_mm = self._belt_mm
        assert now_mm is not None
        prev, self._last_reading = self._last_reading, (now_mm, speed, t_ns)
        if prev is None:
            self._new_epoch("first encoder reading")
            return
        p, v, t_prev = prev
        dt = max(0.0, (t_ns - t_prev) / 1e9)
        fast = max(abs(v), abs(speed))
        tol = max(_FRAME_TOL_MM, fast * _FRAME_TOL_S)
        if not p - tol <= now_mm <= p + fast * dt + tol:
            r = self.map.reg("BELT_POSITION")
            self._new_epoch(f"{r.name} (address {r.address}) reads {now_mm:.1f} mm, {dt:.1f} s after {p:.1f} mm"
                            f" at {fast:.0f} mm/s: the encoder was reset or jumped")

    def _new_epoch(self, why: str) -> None:
        """Start belt frame epoch + 1: marks of older epochs wait until their owner re-bases or closes them."""
        self.epoch += 1
        self._epoch_since = time.time()
        if self.epoch == 1:
            return
        with self._lock:
            self._counts["frame_changes"] += 1
            self._belt_mm = float(self.map.reg("BELT_POSITION").to_physical(self._belt_raw or 0))  # unwrap afresh
            speed = float(self._plc.get("BELT_SPEED", 0.0))
        self._last_reading = (self._belt_mm, speed, self._belt_ns)
        self._error("belt_frame_changed", f"PLC {self.where}: belt frame changed ({why}); unsent marks are"
                    " re-based on the new frame when the line position is certain, else closed as not fired")

    def _check_alive(self, alive: int) -> None:
        """A PLC whose scan counter stands still answers Modbus but runs no program (STOP mode)."""
        now = time.monotonic()
        if self._alive is None or alive != self._alive[0]:
            self._alive = (alive, now)
            self._problem("plc_stalled", False)
            return
        still = now - self._alive[1]
        if still > self.map.heartbeat_timeout_ms / 1000.0:
            self._problem("plc_stalled", True)
            r = self.map.reg("PLC_ALIVE")
            self._error("plc_stalled", f"PLC {self.where}: {r.name} (address {r.address}) = {alive} unchanged for"
                        f" {still:.1f} s: the PLC program is not running (STOP mode?); marks will not fire")

    # -- acknowledgements ---------------------------------------------------------------------
    def _check_faults(self, bits: int) -> None:
        """Log the PLC's fault bits by name when they change (rate-limited)."""
        if bits == self._faults:
            return
        self._faults = bits
        held = self._throttle.due("plc_faults")
        if held is not None:
            r = self.map.reg("MARKER_FAULTS")
            log.warning("plc fault bits changed", plc=self.where, faults=self.map.fault_names(bits),
                        register=f"{r.name} (address {r.address}) = 0x{bits:04X}", repeats=held)

    def _check_map_version(self, plc_version: int) -> None:
        if plc_version in (0, self.map.version):
            self._problem("map_version", False)
            return
        self._problem("map_version", True)
        r = self.map.reg("PLC_MAP_VERSION")
        self._error("map_version", f"PLC {self.where}: {r.name} (address {r.address}) = {plc_version}, this"
                    f" inspector speaks map version {self.map.version}; no marks are sent until the PLC program matches")

    def _take_ack(self, ack: int) -> None:
        """Apply the PLC's LAST_ACK_SEQ to the outbox, or refuse it with a reason (docs/register-map.md)."""
        self._ack_moved = False
        r = self.map.reg("LAST_ACK_SEQ")
        reg = f"{r.name} (address {r.address}) = {ack}"
        counts = self.outbox.counts()
        last_seq, acked_upto = counts["last_seq"], counts["acked_upto"]
        if ack > last_seq:
            if self._fresh and acked_upto == 0 and ack < 1 << 31:
                floor = max(ack, self._plc_written_at_connect)
                n = self.outbox.raise_seq_floor(floor)
                log.warning("plc has seen later sequences than this outbox; continuing above them",
                            plc=self.where, register=reg, floor=floor, renumbered=n)
                self._accept_ack(ack)
                return
            self._problem("ack_beyond", True)
            self._error("ack_beyond", f"PLC {self.where}: {reg} is beyond every sequence this inspector ever"
                        f" wrote ({last_seq}); not trusted, ring gated at ack {self._trusted_ack}")
            return
        self._problem("ack_beyond", False)
        forgot = self._fresh and ack == 0 and self._plc_written_at_connect == 0 and counts["written_upto"] > 0
        if ack < acked_upto or forgot:  # forgot: it acknowledged nothing, and its ring lost what was written
            if self._fresh and ack == 0 and self._plc_written_at_connect == 0:
                n = self.outbox.renumber_pending(1)
                self._written_max = 0
                lost = self._memory_lost()
                self._error("plc_memory_lost", f"PLC {self.where}: {reg} and LAST_WRITTEN_SEQ = 0 after"
                            f" {acked_upto} acknowledged and {counts['written_upto']} written: the PLC lost its memory; {lost} marks it had acknowledged"
                            f" but not fired are lost with it; {n} pending marks renumbered from 1 and held"
                            " until re-based on the new belt frame")
                self._accept_ack(0)
                return
            self._problem("ack_backwards", True)
            self._error("ack_backwards", f"PLC {self.where}: {reg} is below {acked_upto} acknowledged"
                        f" before; nothing is sent until it makes sense again")
            return
        self._problem("ack_backwards", False)
        self._accept_ack(ack)

    def _memory_lost(self) -> int:
        """A PLC without its memory: a new belt frame (unless the encoder jump started one already);
        the acknowledged marks whose deadline lay beyond the last position read from the old PLC
        were in its fire list, not fired: counted as lost."""
        epoch, since, last_mm = self._at_connect
        if self.epoch == epoch:
            self._new_epoch("the PLC lost its memory")
        lost = self.outbox.acked_since(since, last_mm) if last_mm is not None else 0
        with self._lock:
            self._counts["marks_lost_in_plc"] += lost
        return lost

    def _accept_ack(self, ack: int) -> None:
        self._ack_moved = self._trusted_ack is not None and ack > self._trusted_ack
        n = self.outbox.ack(ack)
        if self._fresh or self._trusted_ack is None:
            self._next_write = ack + 1  # after a (re)connect: resend from ack + 1
        else:
            self._next_write = max(self._next_write, ack + 1)
        self._trusted_ack = ack
        with self._lock:
            self._counts["marks_acked"] += n

    # -- the ring -----------------------------------------------------------------------------
    def _send(self) -> None:
        """Write pending marks from the next sequence on, as far as the ring has free slots."""
        if self._trusted_ack is None or self._problems & {"ack_backwards", "map_version"}:
            return
        ring = self.map.ring
        marks = self.outbox.pending(after_seq=self._next_write - 1, limit=ring.slots)
        wrote = False
        for m in marks:
            if m.epoch is not None and m.epoch != self.epoch:  # planned in another belt frame: held
                self._problem("frame_hold", True)
                break
            if m.seq - ring.slots > self._trusted_ack:
                self._ring_full(m.seq)
                break
            self._write(ring.slot_address(ring.slot_of(m.seq)), self.map.encode_mark(m))
            with self._lock:
                self._counts["marks_sent"] += 1
                self._counts["resends"] += int(m.seq <= max(self._written_max, self._plc_written_at_connect))
            self._written_max = max(self._written_max, m.seq)
            self._next_write = m.seq + 1
            wrote = True
        else:
            self._problem("ring_full", False)
            self._problem("frame_hold", False)
        if wrote:
            self._write(self.map.reg("LAST_WRITTEN_SEQ").address, self.map.reg("LAST_WRITTEN_SEQ").encode(self._next_write - 1))
            self.outbox.set_written(self._next_write - 1)

    def _ring_full(self, seq: int) -> None:
        with self._lock:
            self._counts["ring_full_waits"] += 1
        self._problem("ring_full", True)
        held = self._throttle.due("ring_full")
        if held is not None:
            with self._lock:
                queued = self._plc.get("FIRE_LIST_COUNT")
            log.warning("plc ring full: marks wait in the outbox", plc=self.where, next_seq=seq,
                        plc_ack=self._trusted_ack, slots=self.map.ring.slots, plc_fire_list=queued,
                        plc_faults=self.map.fault_names(self._faults), pending=self.outbox.counts()["pending"],
                        repeats=held)

    def _problem(self, name: str, on: bool) -> None:
        """A condition that makes a RUNNING inspector report DEGRADED while it lasts."""
        self._problems = self._problems | {name} if on else self._problems - {name}

    def _error(self, kind: str, message: str) -> None:
        with self._lock:
            self._errors[kind] += 1
            self._last_error = message
        held = self._throttle.due(kind)
        if held is not None:
            log.error("plc link: " + message, kind=kind, repeats=held)
