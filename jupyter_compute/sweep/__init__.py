"""Hyperparameter sweeps, compatible with Azure ML HyperDrive.

::

    from jupyter_compute.sweep import sweep, SweepConfig, BanditPolicy, choice, uniform

    s = sweep("train.py", config="sweep.yml", target="local", seed=7)   # HyperDrive YAML
    s = sweep("train.py", target="cpu-cluster", config=SweepConfig(
        parameter_space={"--penalty": choice(0.5, 1, 1.5), "--lr": uniform(0.01, 0.1)},
        policy=BanditPolicy(evaluation_interval=1, slack_factor=0.2),
        primary_metric_name="Accuracy", primary_metric_goal="Maximize",
        max_total_runs=8, max_concurrent_runs=2))
    s.wait(); s.best(); s.best_run().metrics()
    Sweep.get(s.id)                                  # from any kernel or shell

The same from a notebook (``%sweep train.py --config sweep.yml``) and a shell
(``jupyter-compute sweep train.py --config sweep.yml --wait``).

* ``config``: the YAML and the Python configuration, parameter expressions;
* ``sampling``: random (seeded, never repeats), grid, bayesian (Optuna's TPE);
* ``policies``: Bandit, MedianStopping, TruncationSelection, NoTermination, Asha —
  pure functions of the metric histories that say why they stop a trial;
* ``controller``: the detached process that runs a sweep; ``handle``: ``Sweep``.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AshaPolicy",
    "BanditPolicy",
    "BayesianParameterSampling",
    "GridParameterSampling",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "RandomParameterSampling",
    "Sweep",
    "SweepConfig",
    "TruncationSelectionPolicy",
    "choice",
    "cli_main",
    "load_sweep_config",
    "lognormal",
    "loguniform",
    "magic_main",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "sweep",
    "uniform",
]

_WHERE = {
    **{name: "jupyter_compute.sweep.policies" for name in (
        "AshaPolicy", "BanditPolicy", "MedianStoppingPolicy", "NoTerminationPolicy",
        "TruncationSelectionPolicy")},
    **{name: "jupyter_compute.sweep.sampling" for name in (
        "BayesianParameterSampling", "GridParameterSampling", "RandomParameterSampling")},
    **{name: "jupyter_compute.sweep.config" for name in (
        "SweepConfig", "load_sweep_config", "choice", "randint", "uniform", "quniform",
        "loguniform", "qloguniform", "normal", "qnormal", "lognormal", "qlognormal")},
    "Sweep": "jupyter_compute.sweep.handle",
    "sweep": "jupyter_compute.sweep.handle",
    "cli_main": "jupyter_compute.sweep.cli",
    "magic_main": "jupyter_compute.sweep.magics",
}


def __getattr__(name: str) -> Any:
    # Lazy: `jupyter-compute sweep` and `%sweep` load only what they use.
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'jupyter_compute.sweep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
