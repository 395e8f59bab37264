"""``flightlog demo``: a real instrumented numeric flow, recorded, consolidated, compared and plotted.

The flow minimises an ill-conditioned quadratic

    f(x) = 1/2 x^T A x - b^T x,    A = Q diag(lambda) Q^T,  lambda_i in [mu, L],  kappa = L / mu

with gradient descent (GD) and Nesterov's accelerated gradient (NAG), over a
sweep of step sizes ``alpha = step_scale / L``. GD converges for
``step_scale < 2``; the sweep includes ``step_scale = 2.1``, which diverges: the
run raises inside its ``with`` block and is recorded as ``failed``.

Every iteration records one CFS core row (:data:`flightlog.schemas.CFS_CORE`):

``E``
    the optimality gap ``f(x_k) - f(x*)`` (``x*`` from a direct solve);
``grad_norm``
    ``||A x_k - b||`` from the recursively updated gradient (one matrix-vector
    product per iteration, as in a production solver);
``phi_residual``
    the relative residual ``||A x_k - b|| / ||b||``; the phase is a real
    criterion on the relative gradient ``||g_k|| / ||g_0||``: RED above
    ``amber_at``, AMBER above ``green_at``, GREEN below;
``invariant_drift_max``
    the running maximum of ``||g_rec - (A x_k - b)|| / ||g_0||``, the floating
    point drift between the recursive gradient and the true one, checked every
    ``check_every`` iterations (the invariant ``g == A x - b``);
``eta_dd``
    the diagonal-dominance margin ``min_i (|a_ii| - sum_j!=i |a_ij|) / |a_ii|``
    of ``A`` (negative: not diagonally dominant), a property of the problem;
``alpha``, ``gamma``
    the step size and its scale ``alpha * L``.

Certificate events: entering GREEN emits ``CERT_PASS`` with the a-posteriori
bound ``f(x) - f* <= ||g||^2 / (2 mu)`` (valid for any ``x`` of a ``mu``-strongly
convex ``f``); a divergence emits ``CERT_FAIL`` before the run fails;
``TIMEOUT`` marks a run that used all its iterations without reaching ``tol``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoResult", "QuadraticProblem", "run_demo"]

#: (method, step_scale) of the default sweep; ``step_scale = alpha * L``.
DEFAULT_SWEEP: tuple[tuple[str, float], ...] = (
    ("gd", 0.5),
    ("gd", 1.0),
    ("gd", 1.9),
    ("gd", 2.1),  # diverges: |1 - 2.1| > 1 on the largest eigenvalue
    ("nesterov", 0.25),
    ("nesterov", 1.0),
)

_UNITS = {
    "E": {"unit": "1", "method": "f(x_k) - f(x*), optimality gap; x* by a direct solve"},
    "grad_norm": {"unit": "1", "method": "||A x_k - b||_2 from the recursively updated gradient"},
    "phi_residual": {"unit": "1", "method": "||A x_k - b||_2 / ||b||_2 (relative residual, recursive gradient)"},
    "invariant_drift_max": {
        "unit": "1",
        "method": "running max of ||g_rec - (A x_k - b)||_2 / ||g_0||_2, checked every check_every iterations",
    },
    "eta_dd": {"unit": "1", "method": "min_i (|a_ii| - sum_{j!=i} |a_ij|) / |a_ii| of A (constant)"},
    "alpha": {"unit": "1", "method": "step size alpha = gamma / L"},
    "gamma": {"unit": "1", "method": "step scale alpha * L"},
    "t_wall_ms": {"unit": "ms", "method": "recorder monotonic clock"},
}


class DivergenceError(FloatingPointError):
    """The iteration diverged (the gradient grew past ``blowup`` times its start)."""


@dataclass(frozen=True)
class QuadraticProblem:
    """``f(x) = 1/2 x^T A x - b^T x`` with a known spectrum in ``[mu, L]``."""

    A: Any
    b: Any
    x0: Any
    x_star: Any
    f_star: float
    mu: float
    L: float
    eta_dd: float

    @classmethod
    def make(cls, n: int = 100, kappa: float = 5000.0, seed: int = 0) -> QuadraticProblem:
        import numpy as np

        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        lam = np.geomspace(1.0, kappa, n)
        a = (q * lam) @ q.T
        a = 0.5 * (a + a.T)
        b = rng.standard_normal(n)
        x_star = np.linalg.solve(a, b)
        f_star = float(0.5 * x_star @ a @ x_star - b @ x_star)
        diag = np.abs(np.diag(a))
        off = np.abs(a).sum(axis=1) - diag
        eta_dd = float(np.min((diag - off) / diag))
        return cls(a, b, np.zeros(n), x_star, f_star, 1.0, float(kappa), eta_dd)

    def f(self, x: Any) -> float:
        return float(0.5 * x @ (self.A @ x) - self.b @ x)


@dataclass
class RunOutcome:
    run_id: str
    method: str
    step_scale: float
    status: str
    iterations: int
    seconds: float
    error: str | None = None
    #: The flow's outcome (``converged``, ``diverged``, ``timeout``), as in the manifest.
    outcome: str | None = None


@dataclass
class DemoResult:
    """What :func:`run_demo` made: where, how many rows, how long."""

    root: Path
    db_path: Path
    plot_path: Path | None
    runs: list[RunOutcome] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    record_seconds: float = 0.0
    report_path: Path | None = None  # the HTML report (flightlog report), next to the plot


def _flow(
    tm: Any,
    prob: QuadraticProblem,
    method: str,
    step_scale: float,
    *,
    max_iter: int,
    tol: float,
    amber_at: float,
    green_at: float,
    check_every: int,
    blowup: float,
) -> int:
    """Run one method to ``tol`` (relative gradient), recording every iteration; returns iterations."""
    import numpy as np

    from . import events

    A, b = prob.A, prob.b
    alpha = step_scale / prob.L
    momentum = 0.0
    if method == "nesterov":
        q = prob.mu / prob.L
        momentum = (1.0 - math.sqrt(step_scale * q)) / (1.0 + math.sqrt(step_scale * q))
    x = prob.x0.copy()
    x_prev = x.copy()
    g = A @ x - b  # recursively updated: g == A x - b up to rounding
    g_prev = g.copy()
    g0 = float(np.linalg.norm(g))
    b_norm = float(np.linalg.norm(b))
    x_star, eta_dd = prob.x_star, prob.eta_dd
    drift = 0.0
    phase = "RED"
    record, now = tm.record, tm.recorder.now_ms
    tail = (None,) * 4  # trial_id, lambda, lambda_j, sparsity_wx
    tail2 = (None, None, method, None, None, None, None)  # level_active_max .. notes

    for k in range(max_iter + 1):
        gn = math.sqrt(float(g @ g))
        rel = gn / g0
        # f(x) - f* = 1/2 e.(A e) with e = x - x*, and A e = A x - b = g: no cancellation, no matvec
        energy = 0.5 * float((x - x_star) @ g)
        if k % check_every == 0:
            true_g = A @ x - b
            drift = max(drift, float(np.linalg.norm(g - true_g)) / g0)
        new_phase = "RED" if rel > amber_at else ("AMBER" if rel > green_at else "GREEN")
        entered = new_phase if new_phase != phase else None
        phase = new_phase
        # The row first, then its events: an event takes the iter of the last recorded row,
        # which is then this iteration's, the same as the "iter" in its payload.
        record(phase, k, now(), energy, gn, eta_dd, step_scale, alpha, gn / b_norm, drift, *tail, *tail2)
        if entered == "GREEN":
            bound = gn * gn / (2.0 * prob.mu)  # f(x) - f* <= ||g||^2 / (2 mu)
            tm.event(
                events.CERT_PASS,
                {"iter": k, "rel_grad": rel, "gap_bound": bound, "gap": energy, "holds": energy <= bound * 1.0001},
            )
        if not (math.isfinite(rel) and rel < blowup):
            tm.event(events.CERT_FAIL, {"reason": "diverged", "iter": k, "rel_grad": rel, "step_scale": step_scale})
            tm.outcome = "diverged"
            raise DivergenceError(
                f"{method} with step_scale={step_scale} diverged at iteration {k}: ||g||/||g0|| = {rel:.3g}"
            )
        if rel <= tol:
            tm.outcome = "converged"
            return k
        if k == max_iter:
            break
        if method == "gd":
            x -= alpha * g
            g -= alpha * (A @ g)
        else:
            # y = x + m (x - x_prev); x+ = y - alpha grad f(y); grad f is affine, so
            # grad f(y) = g + m (g - g_prev) and grad f(x+) = grad f(y) - alpha A grad f(y).
            gy = g + momentum * (g - g_prev)
            y = x + momentum * (x - x_prev)
            x_prev, g_prev = x, g
            x = y - alpha * gy
            g = gy - alpha * (A @ gy)
    tm.event(events.TIMEOUT, {"iter": max_iter, "rel_grad": rel, "tol": tol})
    return max_iter


def _have_matplotlib() -> bool:
    """Whether ``import matplotlib`` works (the ``plot`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _say(out: Callable[[str], Any] | None, text: str = "") -> None:
    if out is not None:
        out(text)


def run_demo(
    root: str | os.PathLike[str] | None = None,
    *,
    quick: bool = False,
    n: int | None = None,
    kappa: float | None = None,
    max_iter: int | None = None,
    tol: float = 1e-9,
    sweep: tuple[tuple[str, float], ...] = DEFAULT_SWEEP,
    seed: int = 0,
    plot: bool | str | os.PathLike[str] = True,
    out: Callable[[str], Any] | None = print,
    fmt: str = "table",
) -> DemoResult:
    """Run the demo sweep under ``root``, consolidate, print the runs and the comparison, plot.

    ``quick=True`` makes a small problem (a few thousand rows, about a second)
    for tests. ``plot`` is ``True`` (``<root>/convergence.png``), a path, or
    ``False``; without matplotlib (the ``plot`` extra) the plot is skipped with
    a one-line note and everything else still runs. ``out`` receives the printed lines (``None``: silent).
    Returns a :class:`DemoResult`.
    """
    from . import schemas
    from .catalog import DuckDBManager
    from .runs.ids import resolve_root
    from .runs.manager import TelemetryManager

    t_start = time.perf_counter()
    n = n if n is not None else (40 if quick else 100)
    kappa = kappa if kappa is not None else (200.0 if quick else 5000.0)
    max_iter = max_iter if max_iter is not None else (5000 if quick else 120_000)
    root_path = resolve_root(root)
    prob = QuadraticProblem.make(n=n, kappa=kappa, seed=seed)
    result = DemoResult(root=root_path.absolute(), db_path=root_path.absolute() / "duckdb.db", plot_path=None)
    _say(out, f"flightlog demo: minimising a {n}-dim quadratic with condition number {kappa:g} under {root_path}")
    _say(out, f"  sweep: {', '.join(f'{m} alpha*L={s:g}' for m, s in sweep)}; stop at ||g||/||g0|| <= {tol:g}")

    t_rec = time.perf_counter()
    for method, scale in sweep:
        params = {
            "method": method,
            "step_scale": scale,
            "alpha": scale / prob.L,
            "n": n,
            "kappa": kappa,
            "tol": tol,
            "max_iter": max_iter,
            "seed": seed,
        }
        t0 = time.perf_counter()
        outcome = RunOutcome("", method, scale, "finished", 0, 0.0)
        tm = None
        try:
            with TelemetryManager(
                root_path,
                f"quadratic_{method}",
                schema=schemas.CFS_CORE,
                params=params,
                tags={"demo": "true", "problem": "ill-conditioned quadratic"},
                units=_UNITS,
                max_rows=max(1_000_000, max_iter + 1),
            ) as tm:
                outcome.run_id = tm.run_id
                # Iterations counted as `flightlog compare` counts them: iter 0 (the start) to the last, inclusive.
                outcome.iterations = 1 + _flow(
                    tm,
                    prob,
                    method,
                    scale,
                    max_iter=max_iter,
                    tol=tol,
                    amber_at=1e-2,
                    green_at=1e-6,
                    check_every=100,
                    blowup=1e6,
                )
        except DivergenceError as e:  # expected for step_scale > 2: the run is recorded as failed
            outcome.status, outcome.error = "failed", str(e)
        outcome.seconds = time.perf_counter() - t0
        if tm is not None:
            outcome.iterations = outcome.iterations or int(tm.manifest.get("counts", {}).get("rows_written", 0))
            outcome.outcome = tm.outcome
            result.rows += int(tm.manifest.get("counts", {}).get("rows_written", 0))
        result.runs.append(outcome)
        line = (
            f"  {outcome.run_id:<18} {method:<9} alpha*L={scale:<5g} {outcome.status:<8} "
            f"{outcome.outcome or '':<9} {outcome.iterations:>7,} iterations"
        )
        line += f"  {outcome.seconds:6.2f} s"
        if outcome.error:
            line += f"  ({outcome.error})"
        _say(out, line)
    result.record_seconds = time.perf_counter() - t_rec

    db = DuckDBManager(root_path)
    report = db.consolidate()
    _say(out, f"\nconsolidated into {result.db_path}: {report}")

    from ._analysis import compare_rows, narrow_compare, runs_rows
    from ._render import render

    ids = [r.run_id for r in result.runs if r.run_id]
    cols, rows = runs_rows(root_path, run_ids=ids, db=db)
    _say(out, "\nruns:")
    _say(out, render(cols, rows, fmt))
    cols, rows = compare_rows(db, ids, metric="E", tol=1e-8, params=["method", "step_scale"])
    if fmt == "table":
        cols, rows = narrow_compare(cols, rows, drop=("flow_name", "rows_per_s", "first", "delta_min", "rows"))
    _say(out, "comparison of E = f(x) - f(x*), with iterations and seconds to reach E <= 1e-8:")
    _say(out, render(cols, rows, fmt))

    # The report needs no extra (its charts are drawn by the browser): written even without matplotlib.
    report_dir = None if not plot else (root_path if plot is True else Path(plot).parent)
    if plot and not _have_matplotlib():
        # The plot is the demo's last extra, not its job: a bare `pip install flightlog` runs it to
        # exit 0 and says in one line how to get the figure.
        _say(out, "convergence plot skipped: matplotlib is not installed (pip install 'flightlog[plot]')")
        plot = False
    if plot:
        from ._plot import plot_runs

        target = root_path / "convergence.png" if plot is True else Path(plot)
        info = plot_runs(
            db,
            ids,
            metric="E",
            out=target,
            logy=True,
            logx=True,
            params=["method", "step_scale"],
            title=f"Convergence on a quadratic, condition number {kappa:g}",
        )
        result.plot_path = Path(info["path"])
        _say(out, f"convergence plot: {result.plot_path}")
    if report_dir is not None:
        from ._report import write_report

        rep = write_report(root_path, ids, report_dir / "report.html", tol=1e-8)
        result.report_path = Path(rep["path"])
        _say(out, f"report (open it in a browser): {result.report_path}")

    result.seconds = time.perf_counter() - t_start
    _say(out, f"\n{len(result.runs)} runs, {result.rows:,} telemetry rows recorded in {result.record_seconds:.1f} s.")
    _say(out, f"Everything is under {result.root}:")
    _say(out, "  fda_run_*/            one folder per run: manifest.toml, telemetry.parquet, events.parquet")
    _say(out, f"  duckdb.db             the catalog   (try: flightlog query --root {root_path} 'SELECT ...')")
    if result.plot_path is not None:
        _say(out, f"  {result.plot_path.name:<21} the convergence plot")
    if result.report_path is not None:
        _say(out, f"  {result.report_path.name:<21} the runs' charts and comparison, one HTML file (or: flightlog ui)")
    _say(out, f"demo done in {result.seconds:.1f} s")
    return result


if __name__ == "__main__":  # pragma: no cover
    run_demo(sys.argv[1] if len(sys.argv) > 1 else None)
