"""Early-termination policies: pure functions of the trials' metric histories.

Each policy answers one question — given every trial's history of the primary
metric so far, which running trials should stop now, and why? — without any I/O,
so it is tested with plain lists and every decision can be replayed and explained::

    >>> policy = BanditPolicy(slack_factor=0.2)
    >>> policy.stops({"a": [0.80, 0.83], "b": [0.60, 0.61]}, running={"b"},
    ...              metric="Accuracy")
    [Stop(trial='b', interval=2, reason='interval 2: Accuracy 0.61 < best 0.83/(1+0.2) = 0.6917')]

Intervals are HyperDrive's: each time a trial logs the primary metric is one
interval (1, 2, 3, …), and a policy is applied at every multiple of
``evaluation_interval`` that is at least ``delay_evaluation``.

A running trial is judged at the last evaluation interval it has reached, against
what every trial had logged *up to that same interval* — a young trial is never
compared with values older trials reached later. The controller calls ``stops``
again whenever new values arrive, so a trial is also judged against trials that
reach its interval after it did (HyperDrive only judges at the moment a trial
reports; this is slightly stricter and the same on a synchronous schedule).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from jupyter_compute.exceptions import ConfigError

__all__ = [
    "AshaPolicy",
    "BanditPolicy",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "Policy",
    "Stop",
    "TruncationSelectionPolicy",
]

Histories = Mapping[Any, Sequence[float]]


@dataclass(frozen=True)
class Stop:
    """One decision: stop ``trial``, judged at ``interval``, because of ``reason``."""

    trial: Any
    interval: int
    reason: str


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _better(a: float, b: float, maximize: bool) -> bool:
    """Strictly better; values equal but for float rounding (an average of seven
    0.9s is 0.9000000000000001) are not."""
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return False
    return a > b if maximize else a < b


def _best(values: Sequence[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


class Policy:
    """Base of the policies: ``stops(histories, running, ...)`` returns the decisions."""

    type_name: ClassVar[str] = "Policy"
    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def stops(self, histories: Histories, running: Collection[Any] | None = None, *,
              maximize: bool = True, metric: str = "metric",
              finished: Collection[Any] = ()) -> list[Stop]:
        """Which ``running`` trials (default: all) to stop now, each with its reason.

        ``histories`` maps each trial (running, finished or stopped) to the values of
        the primary metric it logged, in order; ``finished`` names trials that ended
        on their own (TruncationSelectionPolicy can leave them out).
        """
        decisions = []
        memo: dict[Any, Any] = {}  # what all trials judged at one interval share
        for trial in histories if running is None else running:
            values = histories.get(trial) or ()
            interval = self.judged_at(len(values))
            if interval is None:
                continue
            reason = self._judge(trial, interval, histories, maximize, metric, finished, memo)
            if reason is not None:
                decisions.append(Stop(trial, interval, reason))
        return decisions

    def judged_at(self, reported: int) -> int | None:
        """The last evaluation interval within ``reported`` intervals, if any."""
        step = max(1, self.evaluation_interval)
        interval = reported - reported % step
        if interval < max(1, self.delay_evaluation):
            return None
        return interval

    def _judge(self, trial: Any, interval: int, histories: Histories, maximize: bool,
               metric: str, finished: Collection[Any], memo: dict[Any, Any]) -> str | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        """The YAML form, e.g. ``{"type": "BanditPolicy", "slack_factor": 0.2, ...}``."""
        out: dict[str, Any] = {"type": self.type_name}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        return out

    def describe(self) -> str:
        """``BanditPolicy(slack_factor=0.2, evaluation_interval=1)``."""
        args = ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if k != "type")
        return f"{self.type_name}({args})"


def _check_interval(evaluation_interval: Any, delay_evaluation: Any) -> None:
    if not isinstance(evaluation_interval, int) or isinstance(evaluation_interval, bool) \
            or evaluation_interval < 1:
        raise ConfigError(f"evaluation_interval must be an integer of at least 1, got "
                          f"{evaluation_interval!r}", key="evaluation_interval")
    if not isinstance(delay_evaluation, int) or isinstance(delay_evaluation, bool) \
            or delay_evaluation < 0:
        raise ConfigError(f"delay_evaluation must be an integer of at least 0, got "
                          f"{delay_evaluation!r}", key="delay_evaluation")


def _check_number(name: str, value: Any, minimum: float = 0.0, strict: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= minimum if strict else value < minimum):
        relation = "greater than" if strict else "at least"
        raise ConfigError(f"{name} must be a number {relation} {minimum:g}, got {value!r}",
                          key=name)


@dataclass(frozen=True)
class BanditPolicy(Policy):
    """Stop a trial whose best value is not within the slack of the best trial's.

    At interval N, with the goal Maximize, a trial is stopped when its best value so
    far is below ``best / (1 + slack_factor)`` (or ``best - slack_amount``), where
    ``best`` is the best value any trial logged up to interval N. Minimize mirrors
    it: above ``best * (1 + slack_factor)`` (or ``best + slack_amount``).

    >>> BanditPolicy(slack_factor=0.2, evaluation_interval=1, delay_evaluation=5)
    """

    type_name: ClassVar[str] = "BanditPolicy"
    evaluation_interval: int = 1
    slack_factor: float | None = None
    slack_amount: float | None = None
    delay_evaluation: int = 0

    def __post_init__(self) -> None:
        if self.slack_factor is not None and self.slack_amount is not None:
            raise ConfigError("BanditPolicy takes slack_factor or slack_amount, not both; "
                              "remove one", key="slack_amount")
        if self.slack_factor is None and self.slack_amount is None:
            raise ConfigError("BanditPolicy needs slack_factor (a ratio, e.g. 0.2) or "
                              "slack_amount (an absolute distance)", key="type")
        if self.slack_factor is not None:
            _check_number("slack_factor", self.slack_factor)
        if self.slack_amount is not None:
            _check_number("slack_amount", self.slack_amount, strict=False)
        _check_interval(self.evaluation_interval, self.delay_evaluation)

    def _judge(self, trial: Any, interval: int, histories: Histories, maximize: bool,
               metric: str, finished: Collection[Any], memo: dict[Any, Any]) -> str | None:
        mine = _best(histories[trial][:interval], maximize)
        if interval not in memo:  # C-level max over slices beats a running max per value
            memo[interval] = _best([_best(h[:interval], maximize) for h in histories.values()
                                    if h], maximize)
        best = memo[interval]
        if self.slack_factor is not None:
            s = self.slack_factor
            limit = best / (1 + s) if maximize else best * (1 + s)
            formula = f"{_fmt(best)}/(1+{s:g})" if maximize else f"{_fmt(best)}*(1+{s:g})"
        else:
            a = float(self.slack_amount or 0.0)
            limit = best - a if maximize else best + a
            formula = f"{_fmt(best)}-{a:g}" if maximize else f"{_fmt(best)}+{a:g}"
        if _better(limit, mine, maximize):
            sign = "<" if maximize else ">"
            return (f"interval {interval}: {metric} {_fmt(mine)} {sign} best {formula} = "
                    f"{_fmt(limit)}")
        return None


@dataclass(frozen=True)
class MedianStoppingPolicy(Policy):
    """Stop a trial whose best value is worse than the median of running averages.

    At interval N a trial is stopped when its best value up to N is worse than the
    median, over all trials that reached N, of their averages over intervals 1..N
    (Google Vizier's median stopping rule, as HyperDrive applies it).

    >>> MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=5)
    """

    type_name: ClassVar[str] = "MedianStoppingPolicy"
    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def __post_init__(self) -> None:
        _check_interval(self.evaluation_interval, self.delay_evaluation)

    def _judge(self, trial: Any, interval: int, histories: Histories, maximize: bool,
               metric: str, finished: Collection[Any], memo: dict[Any, Any]) -> str | None:
        if interval not in memo:
            averages = sorted(math.fsum(h[:interval]) / interval for h in histories.values()
                              if len(h) >= interval)
            memo[interval] = (_median(averages), len(averages))
        median, count = memo[interval]
        mine = _best(histories[trial][:interval], maximize)
        if _better(median, mine, maximize):
            sign = "<" if maximize else ">"
            return (f"interval {interval}: best {metric} {_fmt(mine)} {sign} median "
                    f"{_fmt(median)} of {count} trials' running averages")
        return None


@dataclass(frozen=True)
class TruncationSelectionPolicy(Policy):
    """Stop the lowest ``truncation_percentage`` percent of trials at each interval.

    At interval N the trials that reached N are ranked by their value at N; a trial
    in the lowest ``floor(n * truncation_percentage / 100)`` is stopped (ties count
    in its favour). ``exclude_finished_jobs`` leaves finished trials out of the
    ranking.

    >>> TruncationSelectionPolicy(truncation_percentage=20, delay_evaluation=5)
    """

    type_name: ClassVar[str] = "TruncationSelectionPolicy"
    truncation_percentage: int = 0
    evaluation_interval: int = 1
    delay_evaluation: int = 0
    exclude_finished_jobs: bool = False

    def __post_init__(self) -> None:
        p = self.truncation_percentage
        if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 99:
            raise ConfigError(f"truncation_percentage must be an integer from 1 to 99, got "
                              f"{p!r}", key="truncation_percentage")
        if not isinstance(self.exclude_finished_jobs, bool):
            raise ConfigError("exclude_finished_jobs must be true or false",
                              key="exclude_finished_jobs")
        _check_interval(self.evaluation_interval, self.delay_evaluation)

    def _judge(self, trial: Any, interval: int, histories: Histories, maximize: bool,
               metric: str, finished: Collection[Any], memo: dict[Any, Any]) -> str | None:
        pool = [t for t, h in histories.items() if len(h) >= interval
                and (t == trial or not (self.exclude_finished_jobs and t in finished))]
        cut = len(pool) * self.truncation_percentage // 100
        if cut == 0:
            return None
        mine = histories[trial][interval - 1]
        ahead = sum(1 for t in pool if _better(histories[t][interval - 1], mine, maximize))
        if ahead >= len(pool) - cut:
            return (f"interval {interval}: {metric} {_fmt(mine)} ranks {ahead + 1} of "
                    f"{len(pool)}, in the lowest {self.truncation_percentage}% "
                    f"({cut} trial{'s' if cut > 1 else ''})")
        return None


@dataclass(frozen=True)
class NoTerminationPolicy(Policy):
    """Never stop a trial early (HyperDrive's default).

    >>> NoTerminationPolicy().stops({"a": [0.1]})
    []
    """

    type_name: ClassVar[str] = "NoTerminationPolicy"

    def stops(self, histories: Histories, running: Collection[Any] | None = None, *,
              maximize: bool = True, metric: str = "metric",
              finished: Collection[Any] = ()) -> list[Stop]:
        return []


@dataclass(frozen=True)
class AshaPolicy(Policy):
    """Asynchronous successive halving (ASHA), beyond HyperDrive.

    Rungs sit at intervals ``min_interval * reduction_factor**k`` (up to
    ``max_interval`` if given). A trial that reached a rung goes on only while its
    value there is in the top ``1/reduction_factor`` of the values every trial
    logged at that rung (the cut-off is that quantile, so the first trial at a rung
    always goes on); otherwise it stops.

    >>> AshaPolicy(reduction_factor=3, min_interval=1)
    """

    type_name: ClassVar[str] = "AshaPolicy"
    reduction_factor: int = 3
    min_interval: int = 1
    max_interval: int | None = None

    def __post_init__(self) -> None:
        eta = self.reduction_factor
        if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
            raise ConfigError(f"reduction_factor must be an integer of at least 2, got "
                              f"{eta!r}", key="reduction_factor")
        m = self.min_interval
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ConfigError(f"min_interval must be an integer of at least 1, got {m!r}",
                              key="min_interval")
        top = self.max_interval
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < m):
            raise ConfigError(f"max_interval must be an integer of at least min_interval "
                              f"({m}), got {top!r}", key="max_interval")

    @property
    def delay_evaluation(self) -> int:  # type: ignore[override]
        return self.min_interval

    def judged_at(self, reported: int) -> int | None:
        rung, found = self.min_interval, None
        while rung <= reported and (self.max_interval is None or rung <= self.max_interval):
            found = rung
            rung *= self.reduction_factor
        return found

    def _judge(self, trial: Any, interval: int, histories: Histories, maximize: bool,
               metric: str, finished: Collection[Any], memo: dict[Any, Any]) -> str | None:
        eta = self.reduction_factor
        if interval not in memo:
            values = sorted(h[interval - 1] for h in histories.values() if len(h) >= interval)
            memo[interval] = (_quantile(values, 1 - 1 / eta if maximize else 1 / eta),
                              len(values))
        cutoff, count = memo[interval]
        mine = histories[trial][interval - 1]
        if _better(cutoff, mine, maximize):
            sign = "<" if maximize else ">"
            return (f"rung at interval {interval}: {metric} {_fmt(mine)} {sign} "
                    f"{_fmt(cutoff)}, the top-1/{eta} cut-off of {count} trials")
        return None


def _median(values: Sequence[float]) -> float:
    """The median of sorted ``values``."""
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values``, interpolated linearly (numpy's default)."""
    pos = (len(values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


#: Policy classes by their HyperDrive type name.
POLICIES: dict[str, type[Policy]] = {
    cls.type_name: cls for cls in (BanditPolicy, MedianStoppingPolicy,
                                   TruncationSelectionPolicy, NoTerminationPolicy, AshaPolicy)
}
