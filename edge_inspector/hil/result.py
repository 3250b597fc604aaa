"""A check's outcome (pass, fail or skip, measured values, why) and the report of every check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_VERSION = 1
CHECKS = ("camera_stream", "encoder", "plc_reachable", "plc_heartbeat", "mark_round_trip", "marking_accuracy")
NOT_REACHABLE = "not run: the PLC is not reachable (see plc_reachable)"


@dataclass
class CheckResult:
    """One check's outcome: ``status`` pass / fail / skip, what was measured, and why."""

    name: str
    status: str
    message: str
    values: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def passed(name: str, message: str, **values: Any) -> CheckResult:
    return CheckResult(name, "pass", message, values)


def failed(name: str, message: str, **values: Any) -> CheckResult:
    return CheckResult(name, "fail", message, values)


def skipped(name: str, message: str, **values: Any) -> CheckResult:
    return CheckResult(name, "skip", message, values)


def format_report(report: dict[str, Any]) -> str:
    """The readable summary: one row per check with its result and message."""
    head = [f"edge-inspector hil: station {report['station']} ({report['mode']}), camera {report['camera']},"
            f" PLC {report['plc']}"]
    w = max(len(n) for n in CHECKS)
    rows = [f"{c['name']:<{w}}  {c['status'].upper():<4}  {c['message']}" for c in report["checks"]]
    n_fail = sum(c["status"] == "fail" for c in report["checks"])
    verdict = "PASSED" if report["passed"] else f"FAILED ({n_fail} check{'s' if n_fail > 1 else ''})"
    return "\n".join(head + rows + [f"{verdict} in {report['seconds']:g} s"])


def exit_code(report: dict[str, Any]) -> int:
    """0 when every check passed or was skipped with a reason, 1 when any failed."""
    return 0 if report["passed"] else 1
