"""Event names.

``RUN_STARTED`` and ``RUN_FINISHED`` are written by :class:`~flightlog.TelemetryManager`
itself; ``ROW_BUDGET_EXCEEDED`` by a recorder whose ``max_rows`` is reached. The
others are the Computable Flows Shim (CFS) names; any valid name is accepted.

A payload is stored as standard JSON text (RFC 8259, which has no NaN or infinity):
a float NaN, ``inf`` or ``-inf`` anywhere in it is stored as the string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"`` (``float()`` and DuckDB's ``::DOUBLE`` read them
back), and a payload nested too deeply to encode raises ``TypeError``, as any other
payload that is not JSON-serialisable does.
"""

from __future__ import annotations

# `import flightlog` stays light: json is imported by the first payload, and `typing`
# only by type checkers (they treat this name as typing.TYPE_CHECKING).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
    "payload_json",
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


def _plain(obj: Any) -> Any:
    # numpy scalars and arrays, without importing numpy.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _finite(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by their names (recursive; only reached
    for payloads that hold one)."""
    import math

    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {(_finite(k) if isinstance(k, float) else k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return _finite(_plain(obj))


def payload_json(name: str, payload: Any) -> str | None:
    """The JSON text stored for ``payload`` of event ``name`` (``None`` for ``None``).

    >>> payload_json("E", {"gap": float("nan"), "r": [1.5, float("-inf")]})
    '{"gap": "NaN", "r": [1.5, "-Infinity"]}'

    Raises:
        TypeError: ``payload`` is not JSON-serialisable (an unknown type, a cycle, or
            nesting deeper than the interpreter's recursion limit allows).
    """
    if payload is None:
        return None
    import json

    try:
        try:
            return json.dumps(payload, allow_nan=False, default=_plain)
        except ValueError as e:
            if "Out of range float" not in str(e):
                raise
        # A NaN or infinity somewhere: spell them as strings (rare; slower path).
        return json.dumps(_finite(payload), allow_nan=False, default=_plain)
    except RecursionError:
        raise TypeError(
            f"payload of event {name!r} is nested too deeply (or refers to itself) to be stored as JSON"
        ) from None
    except (TypeError, ValueError) as e:
        raise TypeError(f"payload of event {name!r} is not JSON-serialisable: {e}") from None
