"""Samplers: where the next trial's parameters come from.

::

    sampler = make_sampler(config, seed=7)
    params = sampler.propose(0)          # {"--penalty": 1.5}, or None when exhausted
    sampler.report(0, [0.71, 0.83], "completed")

**random** draws every parameter independently with ``random.Random(seed)``, so a
seed makes a sweep reproducible. Like HyperDrive it never repeats a
configuration: over a finite space (choice and randint only) a random sweep ends
when every combination has run, so the issue's three-value ``choice`` gives 3
trials even with ``max_total_runs: 8``.

**grid** walks every combination of ``choice`` parameters (HyperDrive allows only
``choice`` there), the first parameter slowest, capped by ``max_total_runs``.

**bayesian** asks Optuna's TPE sampler. HyperDrive restricts Bayesian sampling to
``choice``, ``uniform`` and ``quniform``, forbids early-termination policies and
advises few concurrent runs; here all three are relaxed:

* every expression works — TPE searches the *latent* variable HyperDrive draws
  (the uniform before ``exp``; for the normal family mu ± 3 sigma, with a uniform
  prior instead of the normal one) and the value is made from it as HyperDrive
  would (exp, then rounding to q);
* any policy works — a stopped trial is told to Optuna as pruned, with the values
  it logged as intermediate values;
* concurrent trials are proposed with TPE's "constant liar", so parallel
  proposals spread out instead of repeating each other.

A Bayesian proposal that repeats a configuration is not run again: it is told the
earlier result (or skipped while that one still runs) and TPE proposes anew.
Optuna is imported only here, and only for Bayesian sweeps.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_compute.exceptions import ConfigError
from jupyter_compute.sweep.config import Expression, SweepConfig

__all__ = [
    "BayesianParameterSampling",
    "GridParameterSampling",
    "RandomParameterSampling",
    "Sampler",
    "make_sampler",
]

#: Draws a random sampler makes for one new configuration before it gives up.
MAX_DRAWS = 1000


@dataclass
class _ParameterSampling:
    parameter_space: dict[str, Expression]
    seed: int | None = None
    type: str = field(default="random", init=False)


@dataclass
class RandomParameterSampling(_ParameterSampling):
    """HyperDrive's ``RandomParameterSampling({"--lr": uniform(0.01, 0.1)})``."""

    type: str = field(default="random", init=False)


@dataclass
class GridParameterSampling(_ParameterSampling):
    """HyperDrive's ``GridParameterSampling({"--batch": choice(16, 32)})``."""

    type: str = field(default="grid", init=False)


@dataclass
class BayesianParameterSampling(_ParameterSampling):
    """HyperDrive's ``BayesianParameterSampling({...})``, via Optuna's TPE."""

    type: str = field(default="bayesian", init=False)


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


class Sampler(ABC):
    """Proposes parameters for trial ``index``; learns from reported outcomes."""

    def __init__(self, config: SweepConfig, seed: int | None) -> None:
        self.space = config.parameter_space
        self.seed = seed
        self.size = config.space_size()
        self.seen: set[str] = set()

    @abstractmethod
    def propose(self, index: int) -> dict[str, Any] | None:
        """The parameters of trial ``index``, or None when there is nothing new to try."""

    def report(self, index: int, values: Sequence[float], state: str) -> None:  # noqa: B027
        """Trial ``index`` ended ``completed``, ``stopped`` or ``failed`` with ``values``."""


class RandomSampler(Sampler):
    def __init__(self, config: SweepConfig, seed: int | None) -> None:
        super().__init__(config, seed)
        self.rng = random.Random(seed)

    def propose(self, index: int) -> dict[str, Any] | None:
        if self.size is not None and len(self.seen) >= self.size:
            return None
        # Over a finite space the loop ends: a new combination exists. Elsewhere a
        # repeat is astronomically rare, so a cap only guards a degenerate space.
        draws = max(MAX_DRAWS, 20 * (self.size or 0))
        for _ in range(draws):
            params = {name: expr.sample(self.rng) for name, expr in self.space.items()}
            key = _key(params)
            if key not in self.seen:
                self.seen.add(key)
                return params
        return None


class GridSampler(Sampler):
    def __init__(self, config: SweepConfig, seed: int | None) -> None:
        super().__init__(config, seed)
        names = list(self.space)
        self._grid: Iterator[dict[str, Any]] = (dict(zip(names, combo))
                                                for combo in config.grid())

    def propose(self, index: int) -> dict[str, Any] | None:
        return next(self._grid, None)


class BayesianSampler(Sampler):
    def __init__(self, config: SweepConfig, seed: int | None) -> None:
        super().__init__(config, seed)
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        with warnings.catch_warnings():  # constant_liar is marked experimental
            warnings.simplefilter("ignore")
            sampler = optuna.samplers.TPESampler(
                seed=seed, constant_liar=config.concurrency > 1)
        self.study = optuna.create_study(
            sampler=sampler, direction="maximize" if config.maximize else "minimize")
        self.trials: dict[int, Any] = {}
        self.keys: dict[int, str] = {}
        self.known: dict[str, float] = {}

    def _suggest(self, trial: Any) -> dict[str, Any]:
        params = {}
        for name, expr in self.space.items():
            if expr.kind == "choice":
                params[name] = trial.suggest_categorical(name, list(expr.args))
            elif expr.kind == "randint":
                params[name] = trial.suggest_int(name, 0, expr.args[0] - 1)
            else:
                low, high = expr.latent_range()
                params[name] = expr.from_latent(trial.suggest_float(name, low, high))
        return params

    def propose(self, index: int) -> dict[str, Any] | None:
        state = self._optuna.trial.TrialState
        for _ in range(MAX_DRAWS):
            if self.size is not None and len(self.seen) >= self.size:
                return None
            trial = self.study.ask()
            params = self._suggest(trial)
            key = _key(params)
            if key not in self.seen:
                self.seen.add(key)
                self.trials[index], self.keys[index] = trial, key
                return params
            if key in self.known:  # a repeat teaches TPE nothing new: tell it the result
                self.study.tell(trial, self.known[key])
            else:
                self.study.tell(trial, state=state.FAIL)
        return None

    def report(self, index: int, values: Sequence[float], state: str) -> None:
        trial = self.trials.pop(index, None)
        if trial is None:
            return
        states = self._optuna.trial.TrialState
        if state == "completed" and values:
            self.known[self.keys[index]] = values[-1]
            self.study.tell(trial, values[-1])
        elif state == "stopped" and values:
            for step, value in enumerate(values):
                trial.report(value, step)
            self.study.tell(trial, state=states.PRUNED)
        else:
            self.study.tell(trial, state=states.FAIL)


def make_sampler(config: SweepConfig, seed: int | None = None) -> Sampler:
    """The sampler for ``config.sampling``, seeded with ``seed`` (default: the config's).

    >>> make_sampler(config, seed=7).propose(0)
    {'--penalty': 1.5}
    """
    seed = config.seed if seed is None else seed
    if config.sampling == "random":
        return RandomSampler(config, seed)
    if config.sampling == "grid":
        return GridSampler(config, seed)
    if config.sampling == "bayesian":
        return BayesianSampler(config, seed)
    raise ConfigError(f"unknown sampling type {config.sampling!r}")
