"""Ready-made schemas.

``CFS_CORE`` (version 3) is the Computable Flows Shim's core telemetry schema:
``run_id`` and ``flow_name`` are filled in by :class:`~flightlog.TelemetryManager`;
``t_wall_ms`` is stamped from a monotonic clock (milliseconds since the recorder
started) when a row does not give it.
"""

from __future__ import annotations

from ._schema import Enum, Field, Schema

__all__ = ["CFS_CORE", "PHASES"]

#: The CFS phases, in order of a converging flow.
PHASES = Enum(["RED", "AMBER", "GREEN"])

CFS_CORE = Schema(
    [
        Field("run_id", "str", nullable=False, doc="run id, filled in by the manager"),
        Field("flow_name", "str", nullable=False, doc="flow name, filled in by the manager"),
        Field("phase", PHASES, nullable=False, doc="RED/AMBER/GREEN convergence phase"),
        Field("iter", "i64", nullable=False, doc="iteration number"),
        Field("t_wall_ms", "f64", nullable=False, unit="ms", doc="monotonic ms since the recorder started"),
        Field("E", "f64", nullable=False, doc="energy / objective"),
        Field("grad_norm", "f64", nullable=False, doc="gradient norm"),
        Field("eta_dd", "f64", nullable=False, doc="diagonal-dominance margin"),
        Field("gamma", "f64", nullable=False, doc="step-size parameter"),
        Field("alpha", "f64", nullable=False, doc="step size"),
        Field("phi_residual", "f64", nullable=False, doc="certificate residual (units and method in the manifest)"),
        Field(
            "invariant_drift_max",
            "f64",
            nullable=False,
            doc="largest invariant drift (units and method in the manifest)",
        ),
        Field("trial_id", "str", nullable=True, doc="tuner trial id"),
        Field("lambda", "f64", nullable=True, doc="regularisation weight"),
        Field("lambda_j", "str", nullable=True, doc="per-term weights, JSON text"),
        Field("sparsity_wx", "f64", nullable=True, doc="sparsity of W x"),
        Field("level_active_max", "i64", nullable=True, doc="highest active multiscale level"),
        Field("sparsity_mode", "str", nullable=True),
        Field("flow_family", "str", nullable=True),
        Field("lens_name", "str", nullable=True),
        Field("metric_ber", "f64", nullable=True, doc="diagnostic: bit error rate"),
        Field("warnings", "str", nullable=True, doc="diagnostic warnings"),
        Field("notes", "str", nullable=True, doc="free notes"),
    ],
    version=3,
)
