"""Sweep configuration: HyperDrive's YAML (``az ml run submit-hyperdrive``) or Python.

The YAML is accepted as Azure ML writes it::

    sampling:
        type: random # Supported options: Random, Grid, Bayesian
        parameter_space:
        - name: --penalty
          expression: choice
          values: [0.5, 1, 1.5]
    policy:
        type: BanditPolicy
        evaluation_interval: 1
        slack_factor: 0.2
    primary_metric_name: Accuracy
    primary_metric_goal: Maximize
    max_total_runs: 8
    max_concurrent_runs: 2
    max_duration_minutes: 100

and the same in Python::

    from jupyter_compute.sweep import SweepConfig, BanditPolicy, choice

    config = SweepConfig(
        parameter_space={"--penalty": choice(0.5, 1, 1.5)}, sampling="random",
        policy=BanditPolicy(evaluation_interval=1, slack_factor=0.2),
        primary_metric_name="Accuracy", primary_metric_goal="Maximize",
        max_total_runs=8, max_concurrent_runs=2, max_duration_minutes=100)

Parameter expressions mean what HyperDrive's mean: ``choice(*options)``;
``randint(upper)`` an integer in [0, upper); ``uniform(min_value, max_value)``;
``quniform(min_value, max_value, q)`` = round(uniform / q) * q;
``loguniform(min_value, max_value)`` = exp(uniform(min_value, max_value)), so it
spans exp(min_value)..exp(max_value); ``qloguniform`` = round(loguniform / q) * q;
``normal(mu, sigma)``; ``qnormal`` = round(normal / q) * q;
``lognormal(mu, sigma)`` = exp(normal(mu, sigma)); ``qlognormal`` = round(lognormal / q) * q.
A q-expression with an integer ``q`` gives integers (3, not 3.0), so ``type=int``
arguments parse. In YAML the arguments go in ``values`` in that order
(``values: [0.05, 0.1]`` for uniform) or by name (``min_value: 0.05``).

A parameter named ``--penalty`` reaches a script as ``--penalty VALUE``; a name
without a leading dash gets ``--``; a notebook gets the name without dashes as a
papermill parameter. Errors name the file, the line and the key, and suggest the
closest valid key.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_compute.config import _Located, check_keys, unknown
from jupyter_compute.exceptions import ConfigError
from jupyter_compute.sweep.policies import POLICIES, NoTerminationPolicy, Policy

__all__ = [
    "EXPRESSIONS",
    "Expression",
    "SweepConfig",
    "choice",
    "load_sweep_config",
    "loguniform",
    "lognormal",
    "normal",
    "qloguniform",
    "qlognormal",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]

#: Each expression's arguments, in HyperDrive's order.
EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "choice": ("options",),
    "randint": ("upper",),
    "uniform": ("min_value", "max_value"),
    "quniform": ("min_value", "max_value", "q"),
    "loguniform": ("min_value", "max_value"),
    "qloguniform": ("min_value", "max_value", "q"),
    "normal": ("mu", "sigma"),
    "qnormal": ("mu", "sigma", "q"),
    "lognormal": ("mu", "sigma"),
    "qlognormal": ("mu", "sigma", "q"),
}
SAMPLING_TYPES = ("random", "grid", "bayesian")
GOALS = ("maximize", "minimize")
_NUMBER = (int, float)
_PARAM_KEYS = {"name": str, "expression": str, "values": list, "options": list,
               "upper": int, "min_value": _NUMBER, "max_value": _NUMBER, "mu": _NUMBER,
               "sigma": _NUMBER, "q": _NUMBER}
_TOP_KEYS = {"sampling": dict, "policy": dict, "primary_metric_name": str,
             "primary_metric_goal": str, "max_total_runs": int, "max_concurrent_runs": int,
             "max_duration_minutes": _NUMBER}
#: Bayesian over normal/lognormal searches mu ± this many sigma (TPE's prior is uniform).
NORMAL_SPAN = 3.0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclass(frozen=True)
class Expression:
    """One parameter's distribution, e.g. ``uniform(0.05, 0.1)``.

    Made by the functions ``choice``, ``randint``, ``uniform``, … of this module.

    >>> x = loguniform(-6, -1).sample(random.Random(0))   # between exp(-6) and exp(-1)
    >>> round(x, 4)
    0.169
    """

    kind: str
    args: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.kind not in EXPRESSIONS:
            raise ConfigError(unknown("expression", self.kind, EXPRESSIONS), key="expression")
        names = EXPRESSIONS[self.kind]
        if self.kind == "choice":
            if not self.args:
                raise ConfigError("choice needs at least one value", key="values")
            for v in self.args:
                if not isinstance(v, (str, int, float, bool)) and v is not None:
                    raise ConfigError(f"choice values must be numbers, strings or booleans, "
                                      f"got {v!r}", key="values")
            return
        if len(self.args) != len(names):
            raise ConfigError(f"{self.kind} takes {len(names)} value"
                              f"{'s' if len(names) > 1 else ''} ({', '.join(names)}), got "
                              f"{len(self.args)}: {list(self.args)}", key="values")
        for name, v in zip(names, self.args):
            if not _number(v):
                raise ConfigError(f"{self.kind}'s {name} must be a number, got {v!r}",
                                  key="values")
        if self.kind == "randint":
            if not isinstance(self.args[0], int) or self.args[0] < 1:
                raise ConfigError(f"randint's upper must be an integer of at least 1, got "
                                  f"{self.args[0]!r}", key="values")
        elif "min_value" in names and not self.args[0] < self.args[1]:
            raise ConfigError(f"{self.kind} needs min_value < max_value, got "
                              f"{self.args[0]!r} and {self.args[1]!r}", key="values")
        elif "sigma" in names and not self.args[1] > 0:
            raise ConfigError(f"{self.kind}'s sigma must be greater than 0, got "
                              f"{self.args[1]!r}", key="values")
        if "q" in names and not self.args[-1] > 0:
            raise ConfigError(f"{self.kind}'s q must be greater than 0, got {self.args[-1]!r}",
                              key="values")

    # -- values ---------------------------------------------------------------------

    @property
    def finite(self) -> bool:
        """True for ``choice`` and ``randint``: the values can be listed."""
        return self.kind in ("choice", "randint")

    def options(self) -> list[Any]:
        """Every value of a finite expression (``choice``, ``randint``)."""
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "randint":
            return list(range(self.args[0]))
        raise ValueError(f"{self.kind} has no finite list of values")

    def sample(self, rng: random.Random) -> Any:
        """One value drawn with ``rng``."""
        if self.kind == "choice":
            return self.args[rng.randrange(len(self.args))]
        if self.kind == "randint":
            return rng.randrange(self.args[0])
        a, b = self.args[0], self.args[1]
        latent = rng.gauss(a, b) if "normal" in self.kind else rng.uniform(a, b)
        return self.from_latent(latent)

    def latent_range(self) -> tuple[float, float]:
        """The range a Bayesian sampler searches for a continuous expression.

        The latent variable is what HyperDrive draws before exp() and rounding; for
        the normal family it is mu ± 3 sigma.
        """
        a, b = float(self.args[0]), float(self.args[1])
        if "normal" in self.kind:
            return a - NORMAL_SPAN * b, a + NORMAL_SPAN * b
        return a, b

    def from_latent(self, x: float) -> Any:
        """The parameter's value for latent ``x``: exp() for the log family, then q."""
        if "log" in self.kind:
            x = math.exp(x)
        if self.kind.startswith("q"):
            return _quantize(x, self.args[-1])
        return x

    # -- forms -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: ``{"expression": "uniform", "values": [0.05, 0.1]}``."""
        return {"expression": self.kind, "values": list(self.args)}

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(repr(a) for a in self.args)})"


def _quantize(x: float, q: float) -> float | int:
    """round(x / q) * q — an int for an integer q, else a float without float noise."""
    steps = round(x / q)
    if isinstance(q, int) and not isinstance(q, bool):
        return int(steps * q)
    return float(f"{steps * q:.12g}")


def choice(*options: Any) -> Expression:
    """One of ``options``: ``choice(16, 32, 64)`` or ``choice([16, 32, 64])``."""
    if len(options) == 1 and isinstance(options[0], (list, tuple, range)):
        options = tuple(options[0])
    return Expression("choice", tuple(options))


def randint(upper: int) -> Expression:
    """An integer in [0, upper)."""
    return Expression("randint", (upper,))


def uniform(min_value: float, max_value: float) -> Expression:
    """A float uniformly between ``min_value`` and ``max_value``."""
    return Expression("uniform", (min_value, max_value))


def quniform(min_value: float, max_value: float, q: float) -> Expression:
    """round(uniform(min_value, max_value) / q) * q."""
    return Expression("quniform", (min_value, max_value, q))


def loguniform(min_value: float, max_value: float) -> Expression:
    """exp(uniform(min_value, max_value)): between exp(min_value) and exp(max_value)."""
    return Expression("loguniform", (min_value, max_value))


def qloguniform(min_value: float, max_value: float, q: float) -> Expression:
    """round(exp(uniform(min_value, max_value)) / q) * q."""
    return Expression("qloguniform", (min_value, max_value, q))


def normal(mu: float, sigma: float) -> Expression:
    """A float from the normal distribution N(mu, sigma)."""
    return Expression("normal", (mu, sigma))


def qnormal(mu: float, sigma: float, q: float) -> Expression:
    """round(normal(mu, sigma) / q) * q."""
    return Expression("qnormal", (mu, sigma, q))


def lognormal(mu: float, sigma: float) -> Expression:
    """exp(normal(mu, sigma))."""
    return Expression("lognormal", (mu, sigma))


def qlognormal(mu: float, sigma: float, q: float) -> Expression:
    """round(exp(normal(mu, sigma)) / q) * q."""
    return Expression("qlognormal", (mu, sigma, q))


# -- the configuration ------------------------------------------------------------------


@dataclass
class SweepConfig:
    """A sweep: what to vary, how to sample it, when to stop, what to optimize.

    ``sampling`` is ``"random"``, ``"grid"`` or ``"bayesian"`` (any case), or one of
    ``RandomParameterSampling(space)``, ``GridParameterSampling(space)``,
    ``BayesianParameterSampling(space)`` from ``jupyter_compute.sweep.sampling``.
    ``max_total_runs`` is required except for grid (default: the whole grid);
    ``max_concurrent_runs`` defaults to all at once, as in HyperDrive.

    >>> SweepConfig({"--lr": loguniform(-6, -1)}, primary_metric_name="loss",
    ...             primary_metric_goal="minimize", max_total_runs=20)
    """

    parameter_space: dict[str, Expression] = field(default_factory=dict)
    primary_metric_name: str = ""
    primary_metric_goal: str = "maximize"
    sampling: Any = "random"
    policy: Policy | None = None
    max_total_runs: int | None = None
    max_concurrent_runs: int | None = None
    max_duration_minutes: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        sampling = self.sampling
        if not isinstance(sampling, str):  # a *ParameterSampling object
            self.parameter_space = dict(self.parameter_space or sampling.parameter_space)
            if self.seed is None:
                self.seed = getattr(sampling, "seed", None)
            sampling = sampling.type
        self.sampling = _sampling_type(sampling)
        self.primary_metric_goal = _goal(self.primary_metric_goal)
        self.policy = self.policy or NoTerminationPolicy()
        if not isinstance(self.primary_metric_name, str) or not self.primary_metric_name:
            raise ConfigError("primary_metric_name is required: the metric your script logs "
                              "with run.log(name, value), e.g. Accuracy",
                              key="primary_metric_name")
        if not self.parameter_space:
            raise ConfigError("the parameter space is empty: add parameters to sweep over",
                              key="sampling.parameter_space")
        for name, expr in self.parameter_space.items():
            if not isinstance(expr, Expression):
                raise ConfigError(f"parameter {name!r} must be an expression such as "
                                  f"choice(1, 2) or uniform(0, 1), got {expr!r}", key=name)
        if self.sampling == "grid":
            for i, (name, expr) in enumerate(self.parameter_space.items()):
                if expr.kind != "choice":
                    raise ConfigError(
                        f"grid sampling takes choice parameters only, but {name!r} is "
                        f"{expr.kind}; use random or bayesian sampling, or make it a choice",
                        key=f"sampling.parameter_space.{i}.expression")
            if self.max_total_runs is None:
                self.max_total_runs = self.space_size()
        for key in ("max_total_runs", "max_concurrent_runs"):
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key} must be an integer of at least 1, got {value!r}",
                                  key=key)
        if self.max_total_runs is None:
            raise ConfigError(f"max_total_runs is required for {self.sampling} sampling: "
                              "the most trials to run, e.g. 20", key="max_total_runs")
        if self.max_duration_minutes is not None and not (
                _number(self.max_duration_minutes) and self.max_duration_minutes > 0):
            raise ConfigError(f"max_duration_minutes must be a number greater than 0, got "
                              f"{self.max_duration_minutes!r}", key="max_duration_minutes")
        if self.seed is not None and (not isinstance(self.seed, int)
                                      or isinstance(self.seed, bool)):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}", key="sampling.seed")

    @property
    def maximize(self) -> bool:
        return self.primary_metric_goal == "maximize"

    @property
    def concurrency(self) -> int:
        """How many trials run at once (HyperDrive's default: all of them)."""
        return self.max_concurrent_runs or int(self.max_total_runs or 1)

    def space_size(self) -> int | None:
        """How many distinct configurations there are, if every parameter is finite."""
        if not all(e.finite for e in self.parameter_space.values()):
            return None
        return math.prod(len(e.options()) for e in self.parameter_space.values())

    def grid(self) -> itertools.product[tuple[Any, ...]]:
        """Every combination of the (choice) parameters, first parameter slowest."""
        return itertools.product(*(e.options() for e in self.parameter_space.values()))

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (what ``load_sweep_config`` reads back)."""
        return {
            "sampling": {"type": self.sampling, "parameter_space": [
                {"name": name, **expr.to_dict()} for name, expr in self.parameter_space.items()],
                **({"seed": self.seed} if self.seed is not None else {})},
            "policy": (self.policy or NoTerminationPolicy()).to_dict(),
            "primary_metric_name": self.primary_metric_name,
            "primary_metric_goal": self.primary_metric_goal.capitalize(),
            "max_total_runs": self.max_total_runs,
            "max_concurrent_runs": self.max_concurrent_runs,
            "max_duration_minutes": self.max_duration_minutes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepConfig:
        """A config from its YAML form as a mapping (errors name the key, no line)."""
        return _parse(_Plain(data))


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read a HyperDrive ``sweep.yml``; raise ``ConfigError`` naming file, line and key.

    >>> load_sweep_config(".jupyter_compute/sweep.yml").max_total_runs
    8
    """
    return _parse(_Doc(Path(path)))


# -- parsing ----------------------------------------------------------------------------


class _Doc(_Located):
    """A YAML document that also remembers the lines of list items (parameter_space)."""

    def _index(self, node: Any, prefix: tuple[str, ...]) -> None:
        import yaml

        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                where = prefix + (str(i),)
                self.lines[where] = item.start_mark.line + 1
                self._index(item, where)
            return
        super()._index(node, prefix)


class _Plain(_Located):
    """A mapping given in Python: the same checks, without file or line."""

    def __init__(self, data: Any) -> None:  # noqa: D107 - no file to read
        self.path = None  # type: ignore[assignment]
        self.data = data
        self.lines = {}

    def error(self, message: str, *keys: str) -> ConfigError:
        where = ".".join(keys)
        return ConfigError(f"{message} (at {where})" if where else message,
                           key=keys[-1] if keys else None)


def _norm(text: str) -> str:
    return text.lower().replace("_", "").replace("-", "").replace(" ", "")


def _sampling_type(value: Any) -> str:
    name = _norm(str(value)).removesuffix("parametersampling").removesuffix("sampling")
    if name not in SAMPLING_TYPES:
        raise ConfigError(unknown("sampling type", str(value), SAMPLING_TYPES),
                          key="sampling.type")
    return name


def _goal(value: Any) -> str:
    name = _norm(str(value))
    name = {"max": "maximize", "min": "minimize"}.get(name, name)
    if name not in GOALS:
        raise ConfigError(f"primary_metric_goal must be Maximize or Minimize, got {value!r}",
                          key="primary_metric_goal")
    return name


_POLICY_ALIASES = {_norm(name).removesuffix("policy"): name for name in POLICIES}
_POLICY_ALIASES.update({"none": "NoTerminationPolicy", "median": "MedianStoppingPolicy",
                        "truncation": "TruncationSelectionPolicy"})


def _policy(doc: _Located, raw: Any) -> Policy:
    if raw is None:
        return NoTerminationPolicy()
    if "type" not in raw:
        raise doc.error("policy needs a type: BanditPolicy, MedianStoppingPolicy, "
                        "TruncationSelectionPolicy, NoTerminationPolicy or AshaPolicy",
                        "policy")
    type_name = _POLICY_ALIASES.get(_norm(str(raw["type"])).removesuffix("policy"))
    if type_name is None:
        raise doc.error(unknown("policy type", str(raw["type"]), POLICIES), "policy", "type")
    cls = POLICIES[type_name]
    allowed: dict[str, Any] = {"type": str}
    for f in cls.__dataclass_fields__.values():  # type: ignore[attr-defined]
        allowed[f.name] = {"slack_factor": _NUMBER, "slack_amount": _NUMBER,
                           "exclude_finished_jobs": bool}.get(f.name, int)
    check_keys(doc, raw, allowed, "policy", what=f"key for {type_name}")
    try:
        return cls(**{k: v for k, v in raw.items() if k != "type" and v is not None})
    except ConfigError as exc:
        raise doc.error(str(exc), "policy", exc.key or "type") from None


def _expression(doc: _Located, item: Any, where: tuple[str, ...]) -> tuple[str, Expression]:
    if not isinstance(item, dict):
        raise doc.error("each parameter is a mapping with name, expression and values",
                        *where)
    check_keys(doc, item, _PARAM_KEYS, *where)
    for key in ("name", "expression"):
        if not item.get(key):
            raise doc.error(f"parameter needs a {key!r}", *where)
    kind = _norm(item["expression"])
    if kind not in EXPRESSIONS:
        raise doc.error(unknown("expression", item["expression"], EXPRESSIONS),
                        *where, "expression")
    names = EXPRESSIONS[kind]
    if "values" in item or "options" in item:
        args = tuple(item.get("values", item.get("options")) or ())
    else:
        missing = [n for n in names if n not in item]
        if missing:
            raise doc.error(f"{kind} needs values: [{', '.join(names)}] (or the keys "
                            f"{', '.join(names)})", *where, "expression")
        args = tuple(item[n] for n in names)
    try:
        return str(item["name"]), Expression(kind, args)
    except ConfigError as exc:
        key = "values" if "values" in item else "expression"
        raise doc.error(str(exc), *where, key) from None


def _parse(doc: _Located) -> SweepConfig:
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("a sweep configuration is a mapping with sampling, policy, "
                        "primary_metric_name, primary_metric_goal and max_total_runs")
    check_keys(doc, data, _TOP_KEYS)
    for key in ("sampling", "primary_metric_name", "primary_metric_goal"):
        if data.get(key) is None:
            raise doc.error(f"missing {key!r}: " + {
                "sampling": "add sampling: {type: random, parameter_space: [...]}",
                "primary_metric_name": "the metric your script logs, e.g. Accuracy",
                "primary_metric_goal": "Maximize or Minimize"}[key])
    sampling = data["sampling"]
    check_keys(doc, sampling, {"type": str, "parameter_space": list, "seed": int},
               "sampling")
    space: dict[str, Expression] = {}
    for i, item in enumerate(sampling.get("parameter_space") or []):
        where = ("sampling", "parameter_space", str(i))
        name, expr = _expression(doc, item, where)
        if name in space:
            raise doc.error(f"parameter {name!r} appears twice", *where, "name")
        space[name] = expr
    policy = _policy(doc, data.get("policy"))
    try:
        return SweepConfig(
            parameter_space=space, sampling=sampling.get("type") or "random", policy=policy,
            primary_metric_name=data["primary_metric_name"],
            primary_metric_goal=data["primary_metric_goal"],
            max_total_runs=data.get("max_total_runs"),
            max_concurrent_runs=data.get("max_concurrent_runs"),
            max_duration_minutes=data.get("max_duration_minutes"),
            seed=sampling.get("seed"))
    except ConfigError as exc:
        keys = tuple(exc.key.split(".")) if exc.key else ()
        while keys and doc.lines and doc.line(*keys) is None:
            keys = keys[:-1]  # e.g. a missing parameter_space: point at sampling
        raise doc.error(str(exc), *keys) from None
