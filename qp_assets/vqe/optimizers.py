"""Optimizer drivers: scipy.optimize.minimize methods and SPSA, with evaluation/iteration budgets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from qp_assets.vqe.config import GRADIENT_OPTIMIZERS

# options that bound iterations / evaluations per scipy method
_MAXITER = {"L-BFGS-B", "BFGS", "SLSQP", "CG", "trust-constr", "COBYLA", "COBYQA", "Nelder-Mead", "Powell"}
_MAXFEV = {
    "L-BFGS-B": "maxfun",
    "TNC": "maxfun",
    "Nelder-Mead": "maxfev",
    "Powell": "maxfev",
    "COBYQA": "maxfev",
}


class BudgetExceeded(Exception):
    """Raised inside the objective/callback when a budget is exhausted; the best iterate is kept."""


@dataclass
class OptimizeOutcome:
    x: np.ndarray
    success: bool
    nit: int
    message: str


#: Methods whose first step ``step_scale`` can size (the first trial step has unit length), with scipy's
#: default gradient tolerance (gtol). Not BFGS: its first step is the gradient itself, already small.
SCALED_METHODS = {"L-BFGS-B": 1e-5}


def run_scipy(
    method: str,
    fun: Callable,
    x0: np.ndarray,
    *,
    with_gradient: bool,
    callback: Callable,
    options: dict,
    max_iterations: int | None,
    max_evaluations: int | None,
    step_scale: float | None = None,
) -> OptimizeOutcome:
    """``fun(x)`` returns (f, grad) when ``with_gradient`` else f. ``callback`` is called once per iteration
    with the iterate and must raise BudgetExceeded to stop.

    ``step_scale`` (radians; L-BFGS-B with analytic gradients only): the expected distance from ``x0`` to
    the optimum, e.g. a scan's extrapolation error. Without curvature information L-BFGS-B tries a first
    step of unit length (1 rad), far outside the region where a warm start's energy is quadratic, and
    needs a second iteration to repair the line search. The problem is then solved in
    ``y = (x - x0) / step_scale`` so the first trial step has that length, with ``gtol`` multiplied by
    ``step_scale`` so the stopping test on the gradient in ``x`` is unchanged (``ftol`` acts on energies:
    unchanged)."""
    if step_scale is not None and with_gradient and method in SCALED_METHODS and 0 < step_scale < 1:
        s, origin = float(step_scale), np.asarray(x0, dtype=float)
        opts = {**options, "gtol": float(options.get("gtol", SCALED_METHODS[method])) * s}

        def scaled(y):
            f, g = fun(origin + s * y)
            return f, s * np.asarray(g)

        out = run_scipy(method, scaled, np.zeros_like(origin), with_gradient=True,
                        callback=lambda y: callback(origin + s * y), options=opts,
                        max_iterations=max_iterations, max_evaluations=max_evaluations)  # fmt: skip
        return OptimizeOutcome(origin + s * out.x, out.success, out.nit, out.message)
    opts = dict(options)
    if max_iterations is not None and method in _MAXITER:
        opts.setdefault("maxiter", max_iterations)
    if max_evaluations is not None and method in _MAXFEV:
        opts.setdefault(_MAXFEV[method], max_evaluations)

    def cb(*args):
        first = args[0]
        x = first.x if hasattr(first, "x") and not isinstance(first, np.ndarray) else first
        callback(np.asarray(x, dtype=float))

    use_jac = with_gradient and method in GRADIENT_OPTIMIZERS
    res = minimize(fun, x0, method=method, jac=True if use_jac else None, callback=cb, options=opts)
    return OptimizeOutcome(np.asarray(res.x, dtype=float), bool(res.success), int(getattr(res, "nit", 0) or 0),
                           str(res.message))  # fmt: skip


def run_spsa(
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    *,
    callback: Callable,
    options: dict,
    max_iterations: int | None,
    seed: int | None,
) -> OptimizeOutcome:
    """Simultaneous perturbation stochastic approximation (Spall's gains; ``a`` calibrated so the first
    step has size ``target_step`` rad). Options: a, c, alpha, gamma, A, target_step, calibration_steps."""
    rng = np.random.default_rng(seed)
    maxiter = int(options.get("maxiter", max_iterations or 200))
    c = float(options.get("c", 0.1))
    alpha = float(options.get("alpha", 0.602))
    gamma = float(options.get("gamma", 0.101))
    big_a = float(options.get("A", 0.1 * maxiter))
    a = options.get("a")
    x = np.array(x0, dtype=float)
    if a is None:
        steps = int(options.get("calibration_steps", 5))
        mags = []
        for _ in range(steps):
            delta = rng.choice([-1.0, 1.0], size=x.size)
            mags.append(abs(fun(x + c * delta) - fun(x - c * delta)) / (2 * c))
        avg = float(np.mean(mags)) or 1e-3
        a = float(options.get("target_step", 0.1)) * (big_a + 1) ** alpha / avg
    a = float(a)
    for k in range(maxiter):
        ak = a / (k + 1 + big_a) ** alpha
        ck = c / (k + 1) ** gamma
        delta = rng.choice([-1.0, 1.0], size=x.size)
        g = (fun(x + ck * delta) - fun(x - ck * delta)) / (2 * ck) * delta
        x = x - ak * g
        callback(x)
    return OptimizeOutcome(x, True, maxiter, f"SPSA finished {maxiter} iterations")
