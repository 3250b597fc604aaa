"""A PlcLink in a process of its own, for tests/test_plc_link.py to kill with SIGKILL.

    python tests/plc_link_child.py PORT OUTBOX N_MARKS SPACING_MM

Connects, reports RUNNING, submits N_MARKS ink marks (keys child-0, child-1, ...) starting at
the PLC's belt position SPACING_MM apart, prints "submitted N", then heartbeats until killed.
"""

from __future__ import annotations

import sys
import time

from edge_inspector import logs
from edge_inspector.config import Plc
from edge_inspector.mark import Action, InspectorState, Mark
from edge_inspector.plc.link import PlcLink
from edge_inspector.plc.outbox import Outbox


def main(argv: list[str]) -> int:
    port, outbox, n, spacing = int(argv[1]), argv[2], int(argv[3]), float(argv[4])
    logs.configure()  # log lines to stderr: stdout is for the test
    link = PlcLink(Plc(host="127.0.0.1", port=port, heartbeat_ms=20, reconnect_max_s=0.2), Outbox(outbox)).start()
    if not link.wait_connected(10.0):
        print("not connected", flush=True)
        return 1
    link.set_state(InspectorState.RUNNING)
    belt = link.belt_mm()
    assert belt is not None
    marks = link.submit([Mark(Action.INK, belt + i * spacing, key=f"child-{i}") for i in range(n)])
    print(f"submitted {len(marks)}", flush=True)
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
