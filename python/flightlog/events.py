"""Event names.

``RUN_STARTED`` and ``RUN_FINISHED`` are written by :class:`~flightlog.TelemetryManager`
itself; ``ROW_BUDGET_EXCEEDED`` by a recorder whose ``max_rows`` is reached. The
others are the Computable Flows Shim (CFS) names; any valid name is accepted.
"""

from __future__ import annotations

__all__ = [
    "CANCELLED",
    "CERT_FAIL",
    "CERT_PASS",
    "CFS_EVENTS",
    "LENS_SELECTED",
    "ROLLBACK",
    "ROW_BUDGET_EXCEEDED",
    "RUN_FINISHED",
    "RUN_STARTED",
    "SCALE_ACTIVATED",
    "SPEC_LINT_FAIL",
    "TIMEOUT",
    "TUNER_MOVE_REJECTED",
]

RUN_STARTED = "RUN_STARTED"
RUN_FINISHED = "RUN_FINISHED"
ROW_BUDGET_EXCEEDED = "ROW_BUDGET_EXCEEDED"

SPEC_LINT_FAIL = "SPEC_LINT_FAIL"
CERT_FAIL = "CERT_FAIL"
CERT_PASS = "CERT_PASS"
TUNER_MOVE_REJECTED = "TUNER_MOVE_REJECTED"
ROLLBACK = "ROLLBACK"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
LENS_SELECTED = "LENS_SELECTED"
SCALE_ACTIVATED = "SCALE_ACTIVATED"

#: The CFS event names, in the order the CFS documents them.
CFS_EVENTS = (
    SPEC_LINT_FAIL,
    CERT_FAIL,
    CERT_PASS,
    TUNER_MOVE_REJECTED,
    ROLLBACK,
    TIMEOUT,
    CANCELLED,
    LENS_SELECTED,
    SCALE_ACTIVATED,
)
