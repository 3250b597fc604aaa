"""Mark: one command for the line's PLC (docs/architecture.md sections 2 and 8).

A mark says *what* to do (``action``) *where* on the belt. Positions are in the PLC's belt
frame: ``belt_mm`` is the encoder position (mm) at which the spot was under the camera line.
The PLC knows where its actuators sit (marker, reject gate) and fires when its encoder reaches
``belt_mm`` + that distance. ``across_mm`` is measured from the camera's first pixel.

The inspector converts its own line-based belt frame (line x mm_per_line, zero at the first
line of the run) with one offset, ``belt_offset_mm`` = the PLC encoder position at line 0.

``seq`` is assigned by the outbox (1, 2, 3, ...; 0 = not yet persisted). ``key`` makes a mark
idempotent: the outbox keeps one mark per key, so re-planning the same defect (an inspector
restarted on the same recording) never sends it twice.

The belt frame a mark was planned in (docs/marking.md, "Belt frames"): ``run_id`` (the run that
planned it; a run never fires another run's marks), ``epoch`` (the PLC encoder frame: 0 = planned
before the encoder was known, n >= 1 = the link's frame n; None = positions given directly in the
PLC's frame, not checked) and ``offset_mm`` (the belt offset used: ``belt_mm`` = line-frame
position + ``offset_mm``). A mark is sent only in its own frame; after a frame change it is
re-based (``belt_mm`` and ``deadline_belt_mm`` move by the new offset - ``offset_mm``) or closed
as not fired.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Action(enum.IntEnum):
    """What the PLC does when the belt position of a mark reaches its actuator."""

    INK = 1  # ink mark on a defect (or a cluster of defects)
    REJECT_HIDE = 2  # divert the hide whose leading edge is at belt_mm
    UNINSPECTED_START = 3  # a stretch that was not inspected starts at belt_mm
    UNINSPECTED_END = 4  # ... and ends at belt_mm
    HIDE_START = 5  # leading edge of a hide
    HIDE_END = 6  # trailing edge of a hide


class InspectorState(enum.IntEnum):
    """Written to the PLC with every heartbeat."""

    STOPPED = 0
    RUNNING = 1
    DEGRADED = 2  # running, but something is lost or late (drops, PLC backlog, camera gaps)
    FAULT = 3  # not inspecting; the PLC should treat every hide as uninspected


@dataclass(slots=True)
class Mark:
    action: Action
    belt_mm: float  # PLC belt frame: encoder position (mm) of the spot at the camera line
    across_mm: float = 0.0  # from the camera's first pixel
    class_id: int = 0  # model class index (INK); 0 otherwise
    hide_id: int = 0
    length_mm: float = 0.0  # along-belt extent: defect or cluster length, uninspected length
    seq: int = 0  # assigned by the outbox
    key: str = ""  # idempotency key, unique per run source (see module doc)
    # Inspector-side bookkeeping, not sent to the PLC:
    class_name: str = ""
    defect_ids: list[int] = field(default_factory=list)
    deadline_belt_mm: float = 0.0  # encoder position at which the actuator reaches the spot
    planned_ns: int = 0  # time.monotonic_ns() when planned
    late: bool = False  # planned or sent after its deadline (still sent, flagged)
    run_id: str = ""  # the run that planned it
    epoch: int | None = None  # PLC encoder frame (see module doc); None: not checked
    offset_mm: float = 0.0  # belt offset of that frame: belt_mm - offset_mm is the line-frame position

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "key": self.key,
            "action": self.action.name.lower(),
            "belt_mm": round(float(self.belt_mm), 2),
            "across_mm": round(float(self.across_mm), 2),
            "class_id": self.class_id,
            "class": self.class_name,
            "hide_id": self.hide_id,
            "length_mm": round(float(self.length_mm), 2),
            "defect_ids": list(self.defect_ids),
            "deadline_belt_mm": round(float(self.deadline_belt_mm), 2),
            "late": bool(self.late),
            "epoch": self.epoch,
            "offset_mm": round(float(self.offset_mm), 3),
        }
