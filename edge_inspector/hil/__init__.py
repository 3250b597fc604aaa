"""Hardware-in-the-loop checks for a new station: ``edge-inspector hil`` (hil/README.md).

Six checks, each ending pass, fail or skip with measured values and a message:

    camera_stream     the camera streams N seconds at the configured line rate, no lost lines, no frame gaps
    encoder           encoder-triggered lines: belt travel (PLC encoder) per camera line = camera.mm_per_line
    plc_reachable     Modbus TCP link up, map version matches, PLC program alive, registers read
    plc_heartbeat     HEARTBEAT_LOST stays clear while the link beats; the PLC sets it when beats stop
    mark_round_trip   marks submitted far ahead of the belt: submit -> PLC acknowledgement, p50 / max ms
    marking_accuracy  a test hide through the whole chain, marks evaluated against its ground truth

Simulator mode (no ``--cti``/``--device``/``--plc`` and a station on the GenTL simulator, e.g.
configs/stations/viky-sim.toml): the camera is viky.cti and the PLC under test is a soft-PLC process on a
free loopback port; marking_accuracy replays a small synthetic recording with ground truth at the
soft-PLC's belt speed and evaluates where the soft-PLC fired the marks. Against real hardware
marking_accuracy needs a physical test hide and its truth file (``--truth``), else it is skipped.

Modules: ``run`` (``run_hil``: the checks in order), ``session`` (options, what is under test),
``camera`` (camera_stream, encoder), ``plc`` (plc_reachable, plc_heartbeat, mark_round_trip),
``marking`` (marking_accuracy), ``result`` (a check's outcome, the report).
"""

from .marking import PLACEMENT_TOL_MM
from .result import CHECKS, CheckResult, exit_code, format_report
from .run import run_hil
from .session import HilOptions

__all__ = ["CHECKS", "PLACEMENT_TOL_MM", "CheckResult", "HilOptions", "exit_code", "format_report", "run_hil"]
