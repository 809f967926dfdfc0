"""Sweep configuration and sampling: pure and fast (no runs, no processes)."""

from __future__ import annotations

import math
import random
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jupyter_compute.config import TEMPLATES
from jupyter_compute.exceptions import ConfigError
from jupyter_compute.sweep import (
    AshaPolicy,
    BanditPolicy,
    BayesianParameterSampling,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    RandomParameterSampling,
    SweepConfig,
    TruncationSelectionPolicy,
    choice,
    load_sweep_config,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from jupyter_compute.sweep.controller import argument_pairs, did_you_mean, notebook_parameters
from jupyter_compute.sweep.sampling import make_sampler

#: The issue's YAML, byte for byte.
ISSUE_YAML = """\
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
"""


def write(tmp_path: Path, text: str, name: str = "sweep.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def config(**kw: object) -> SweepConfig:
    base: dict[str, object] = {"parameter_space": {"--x": uniform(0, 1)},
                               "primary_metric_name": "m", "max_total_runs": 10}
    base.update(kw)
    return SweepConfig(**base)  # type: ignore[arg-type]


# -- the issue's YAML --------------------------------------------------------------------


def test_issue_yaml_is_accepted_as_written_and_equals_the_python_api(tmp_path: Path) -> None:
    from_yaml = load_sweep_config(write(tmp_path, ISSUE_YAML))
    from_python = SweepConfig(
        parameter_space={"--penalty": choice(0.5, 1, 1.5)}, sampling="random",
        policy=BanditPolicy(evaluation_interval=1, slack_factor=0.2),
        primary_metric_name="Accuracy", primary_metric_goal="Maximize",
        max_total_runs=8, max_concurrent_runs=2, max_duration_minutes=100)
    assert from_yaml == from_python
    assert from_yaml.sampling == "random" and from_yaml.maximize
    assert from_yaml.space_size() == 3
    # The template `init` writes is the same sweep.
    assert load_sweep_config(write(tmp_path, TEMPLATES["sweep.yml"], "t.yml")) == from_yaml


def test_penalty_becomes_a_flag_and_a_notebook_parameter() -> None:
    assert argument_pairs({"--penalty": 0.5, "lr": 1}) == ["--penalty", "0.5", "--lr", "1"]
    assert notebook_parameters({"--penalty": 0.5, "-k": "rbf"}) == {"penalty": 0.5, "k": "rbf"}


def test_random_over_the_issue_space_runs_each_value_once_like_hyperdrive(
        tmp_path: Path) -> None:
    cfg = load_sweep_config(write(tmp_path, ISSUE_YAML))
    sampler = make_sampler(cfg, seed=1)
    drawn = [sampler.propose(i) for i in range(1, 9)]
    assert drawn[3:] == [None] * 5  # capped by the space, not max_total_runs
    assert sorted(d["--penalty"] for d in drawn[:3]) == [0.5, 1, 1.5]  # type: ignore[index]


@pytest.mark.parametrize("spelling,kind", [
    ("random", "random"), ("Random", "random"), ("RANDOM", "random"), ("Grid", "grid"),
    ("Bayesian", "bayesian"), ("RandomParameterSampling", "random"),
    ("bayesian_parameter_sampling", "bayesian")])
def test_sampling_type_is_case_insensitive(tmp_path: Path, spelling: str, kind: str) -> None:
    text = ISSUE_YAML.replace("type: random", f"type: {spelling}")
    assert load_sweep_config(write(tmp_path, text)).sampling == kind


def test_hyperdrive_sampling_objects_work_in_python() -> None:
    cfg = SweepConfig(sampling=RandomParameterSampling({"--lr": loguniform(-6, -1)}, seed=3),
                      primary_metric_name="loss", primary_metric_goal="minimize",
                      max_total_runs=5)
    assert cfg.sampling == "random" and cfg.seed == 3 and not cfg.maximize
    assert list(cfg.parameter_space) == ["--lr"]
    bayes = SweepConfig(sampling=BayesianParameterSampling({"--a": choice(1, 2)}),
                        primary_metric_name="m", max_total_runs=2)
    assert bayes.sampling == "bayesian"


# -- expressions ------------------------------------------------------------------------

ALL_EXPRESSIONS = """\
sampling:
  type: random
  parameter_space:
  - {name: --a, expression: choice, values: [x, 2, 3.5, true]}
  - {name: --b, expression: randint, values: [4]}
  - {name: --c, expression: uniform, values: [0.05, 0.1]}
  - {name: --d, expression: quniform, values: [0, 10, 2]}
  - {name: --e, expression: loguniform, values: [-6, -1]}
  - {name: --f, expression: qloguniform, values: [0, 5, 1]}
  - {name: --g, expression: normal, values: [10, 3]}
  - {name: --h, expression: qnormal, values: [10, 3, 0.5]}
  - {name: --i, expression: lognormal, values: [0, 1]}
  - {name: --j, expression: qlognormal, values: [0, 1, 0.1]}
  - {name: --k, expression: uniform, min_value: 1, max_value: 2}
  - {name: --l, expression: QNormal, mu: 0, sigma: 1, q: 1}
primary_metric_name: m
primary_metric_goal: minimize
max_total_runs: 5
"""


def test_every_expression_parses_from_yaml(tmp_path: Path) -> None:
    cfg = load_sweep_config(write(tmp_path, ALL_EXPRESSIONS))
    assert cfg.parameter_space == {
        "--a": choice("x", 2, 3.5, True), "--b": randint(4), "--c": uniform(0.05, 0.1),
        "--d": quniform(0, 10, 2), "--e": loguniform(-6, -1), "--f": qloguniform(0, 5, 1),
        "--g": normal(10, 3), "--h": qnormal(10, 3, 0.5), "--i": lognormal(0, 1),
        "--j": qlognormal(0, 1, 0.1), "--k": uniform(1, 2), "--l": qnormal(0, 1, 1)}
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg  # what the controller reads back


def draws(expr: object, n: int = 4000) -> list:
    rng = random.Random(42)
    return [expr.sample(rng) for _ in range(n)]  # type: ignore[attr-defined]


def test_expressions_mean_what_hyperdrive_means() -> None:
    assert set(draws(choice(0.5, 1, 1.5))) == {0.5, 1, 1.5}
    assert set(draws(randint(5))) == {0, 1, 2, 3, 4}  # [0, upper)
    u = draws(uniform(2, 3))
    assert all(2 <= x <= 3 for x in u) and abs(statistics.mean(u) - 2.5) < 0.02
    q = draws(quniform(0, 10, 2))
    assert set(q) <= {0, 2, 4, 6, 8, 10} and all(isinstance(x, int) for x in q)
    # loguniform(min, max) is exp(uniform(min, max)): between exp(min) and exp(max),
    # with a uniform logarithm.
    lu = draws(loguniform(-6, -1))
    assert all(math.exp(-6) <= x <= math.exp(-1) for x in lu)
    assert abs(statistics.mean(math.log(x) for x in lu) - (-3.5)) < 0.1
    assert min(lu) < math.exp(-5.9) and max(lu) > math.exp(-1.1)
    qlu = draws(qloguniform(0, 3, 1))
    assert set(qlu) <= set(range(1, 21)) and min(qlu) == 1  # round(exp(u)/q)*q
    n = draws(normal(10, 3))
    assert abs(statistics.mean(n) - 10) < 0.2 and abs(statistics.stdev(n) - 3) < 0.2
    qn = draws(qnormal(10, 3, 0.5))
    assert all(abs(x / 0.5 - round(x / 0.5)) < 1e-9 for x in qn)
    assert all(x == float(f"{x:.12g}") for x in qn)  # no 0.30000000000000004
    ln = draws(lognormal(1, 0.5))
    assert all(x > 0 for x in ln) and abs(statistics.mean(math.log(x) for x in ln) - 1) < 0.05
    qln = draws(qlognormal(0, 1, 0.1))
    assert all(x >= 0 and abs(x * 10 - round(x * 10)) < 1e-9 for x in qln)


# -- errors: one line with file, line and key -------------------------------------------


@pytest.mark.parametrize("edit,line,key,words", [
    (("expression: choice", "expression: chioce"), 5, "expression",
     ["unknown expression 'chioce'", "did you mean 'choice'"]),
    (("slack_factor: 0.2", "slack_factor: 0.2\n    slack_amount: 0.1"), 11, "slack_amount",
     ["slack_factor or slack_amount, not both"]),
    (("max_concurrent_runs: 2", "max_concurrent_runs: 0"), 14, "max_concurrent_runs",
     ["max_concurrent_runs must be an integer of at least 1, got 0"]),
    (("primary_metric_goal", "primary_metric_gaol"), 12, "primary_metric_gaol",
     ["unknown key 'primary_metric_gaol'", "did you mean 'primary_metric_goal'"]),
    (("type: BanditPolicy", "type: BanditPolicee"), 8, "type",
     ["unknown policy type 'BanditPolicee'", "did you mean 'BanditPolicy'"]),
    (("slack_factor: 0.2", "slack_factr: 0.2"), 10, "slack_factr",
     ["did you mean 'slack_factor'"]),
    (("type: random", "type: randum"), 2, "type", ["unknown sampling type 'randum'"]),
    (("values: [0.5, 1, 1.5]", "values: []"), 6, "values", ["choice needs at least one"]),
    (("primary_metric_goal: Maximize", "primary_metric_goal: Biggest"), 12,
     "primary_metric_goal", ["Maximize or Minimize"]),
    (("max_total_runs: 8", "max_total_runs: eight"), 13, "max_total_runs",
     ["'max_total_runs' must be"]),
])
def test_invalid_configs_are_one_line_naming_the_line_and_key(
        tmp_path: Path, edit: tuple[str, str], line: int, key: str, words: list[str]) -> None:
    path = write(tmp_path, ISSUE_YAML.replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_sweep_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert "\n" not in message
    assert info.value.line == line and info.value.key == key
    for w in words:
        assert w in message


def test_grid_over_uniform_names_the_parameter_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        sampling:
          type: Grid
          parameter_space:
          - name: --penalty
            expression: choice
            values: [0.5, 1]
          - name: --lr
            expression: uniform
            values: [0.01, 0.1]
        primary_metric_name: Accuracy
        primary_metric_goal: Maximize
        """)
    with pytest.raises(ConfigError) as info:
        load_sweep_config(path)
    assert str(info.value) == (
        f"{path}:8: grid sampling takes choice parameters only, but '--lr' is uniform; "
        "use random or bayesian sampling, or make it a choice")


@pytest.mark.parametrize("item,words", [
    ("{name: --x, expression: uniform, values: [2, 1]}", "min_value < max_value"),
    ("{name: --x, expression: normal, values: [0, -1]}", "sigma must be greater than 0"),
    ("{name: --x, expression: quniform, values: [0, 1]}", "quniform takes 3 values"),
    ("{name: --x, expression: randint, values: [0]}", "upper must be an integer of at least 1"),
    ("{name: --x, expression: uniform}", "uniform needs values: [min_value, max_value]"),
    ("{name: --x, expression: choice, values: [1], colour: red}", "unknown key 'colour'"),
])
def test_bad_parameters_point_at_their_line(tmp_path: Path, item: str, words: str) -> None:
    path = write(tmp_path, f"""\
        sampling:
          type: random
          parameter_space:
          - {{name: --ok, expression: choice, values: [1]}}
          - {item}
        primary_metric_name: m
        primary_metric_goal: max
        max_total_runs: 3
        """)
    with pytest.raises(ConfigError) as info:
        load_sweep_config(path)
    assert str(info.value).startswith(f"{path}:5: ") and words in str(info.value)


def test_policies_parse_with_their_keys(tmp_path: Path) -> None:
    def policy(body: str) -> object:
        text = ISSUE_YAML.replace(
            "policy:\n    type: BanditPolicy\n    evaluation_interval: 1\n    slack_factor: 0.2\n",
            "policy:\n" + textwrap.indent(textwrap.dedent(body), "    "))
        return load_sweep_config(write(tmp_path, text)).policy

    assert policy("type: MedianStoppingPolicy\ndelay_evaluation: 5\n") == \
        MedianStoppingPolicy(delay_evaluation=5)
    assert policy("type: TruncationSelectionPolicy\ntruncation_percentage: 20\n"
                  "exclude_finished_jobs: true\n") == \
        TruncationSelectionPolicy(truncation_percentage=20, exclude_finished_jobs=True)
    assert policy("type: NoTerminationPolicy\n") == NoTerminationPolicy()
    assert policy("type: bandit\nslack_amount: 0.1\nevaluation_interval: 2\n") == \
        BanditPolicy(slack_amount=0.1, evaluation_interval=2)
    assert policy("type: AshaPolicy\nreduction_factor: 2\nmin_interval: 3\n") == \
        AshaPolicy(reduction_factor=2, min_interval=3)
    with pytest.raises(ConfigError, match=r":9: truncation_percentage must be an integer from 1"):
        policy("type: TruncationSelectionPolicy\ntruncation_percentage: 120\n")
    with pytest.raises(ConfigError, match=r"unknown key for MedianStoppingPolicy 'slack_factor'"):
        policy("type: MedianStoppingPolicy\nslack_factor: 0.1\n")


def test_python_api_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="slack_factor or slack_amount, not both"):
        BanditPolicy(slack_factor=0.1, slack_amount=0.1)
    with pytest.raises(ConfigError, match="max_concurrent_runs must be an integer of at least 1"):
        config(max_concurrent_runs=0)
    with pytest.raises(ConfigError, match="grid sampling takes choice parameters only"):
        config(sampling="grid")
    with pytest.raises(ConfigError, match="max_total_runs is required for random sampling"):
        config(max_total_runs=None)
    with pytest.raises(ConfigError, match="unknown expression 'unifrom'"):
        SweepConfig.from_dict({**config().to_dict(), "sampling": {
            "type": "random",
            "parameter_space": [{"name": "--x", "expression": "unifrom", "values": [0, 1]}]}})


# -- sampling ---------------------------------------------------------------------------


def test_seeded_random_sweep_is_reproducible() -> None:
    cfg = config(parameter_space={"--lr": loguniform(-6, -1), "--bs": choice(16, 32, 64),
                                  "--d": qnormal(0, 1, 0.1)}, max_total_runs=20)
    sampler = make_sampler(cfg, seed=7)
    first = [sampler.propose(i) for i in range(20)]
    again = make_sampler(cfg, seed=7)
    assert [again.propose(i) for i in range(20)] == first
    other = make_sampler(cfg, seed=8)
    assert [other.propose(i) for i in range(20)] != first
    assert len({repr(p) for p in first}) == 20  # never a repeat


def test_grid_walks_every_combination_first_parameter_slowest() -> None:
    cfg = config(sampling="grid", parameter_space={"--a": choice(1, 2),
                                                   "--b": choice("x", "y", "z")},
                 max_total_runs=None)
    assert cfg.max_total_runs == 6  # the whole grid
    sampler = make_sampler(cfg)
    got = [sampler.propose(i) for i in range(7)]
    assert got == [{"--a": 1, "--b": "x"}, {"--a": 1, "--b": "y"}, {"--a": 1, "--b": "z"},
                   {"--a": 2, "--b": "x"}, {"--a": 2, "--b": "y"}, {"--a": 2, "--b": "z"},
                   None]


def test_bayesian_proposes_within_every_expression_and_learns() -> None:
    space = {"--x": uniform(-5, 5), "--c": choice("a", "b"), "--r": randint(3),
             "--q": quniform(0, 10, 1), "--lu": loguniform(-3, 0), "--qlu": qloguniform(0, 2, 1),
             "--n": normal(0, 1), "--qn": qnormal(0, 1, 0.5), "--ln": lognormal(0, 1),
             "--qln": qlognormal(0, 1, 1)}
    cfg = config(sampling="bayesian", parameter_space=space, max_total_runs=60,
                 primary_metric_goal="maximize")
    sampler = make_sampler(cfg, seed=3)
    best = -math.inf
    for i in range(1, 61):
        p = sampler.propose(i)
        assert p is not None
        assert -5 <= p["--x"] <= 5 and p["--c"] in ("a", "b") and p["--r"] in (0, 1, 2)
        assert p["--q"] in range(11) and math.exp(-3) <= p["--lu"] <= 1
        assert -3 <= p["--n"] <= 3 and p["--ln"] > 0 and p["--qln"] % 1 == 0
        value = -(p["--x"] - 2) ** 2
        best = max(best, value)
        outcome = "failed" if i % 13 == 0 else "stopped" if i % 7 == 0 else "completed"
        sampler.report(i, [value - 1, value], outcome)
    assert best > -0.1  # TPE homes in on x = 2


def test_bayesian_over_a_finite_space_stops_when_exhausted() -> None:
    cfg = config(sampling="bayesian", parameter_space={"--a": choice(1, 2, 3)},
                 max_total_runs=8)
    sampler = make_sampler(cfg, seed=0)
    got = []
    for i in range(1, 9):
        p = sampler.propose(i)
        got.append(p)
        if p is not None:
            sampler.report(i, [float(p["--a"])], "completed")
    assert sorted(p["--a"] for p in got if p) == [1, 2, 3] and got[3:] == [None] * 5


def test_optuna_is_imported_only_for_bayesian_sweeps() -> None:
    code = ("import sys\nfrom jupyter_compute.sweep import SweepConfig, uniform\n"
            "from jupyter_compute.sweep.sampling import make_sampler\n"
            "c = SweepConfig({'--x': uniform(0, 1)}, primary_metric_name='m', max_total_runs=2)\n"
            "make_sampler(c, 1).propose(1)\nimport jupyter_compute.sweep.controller\n"
            "assert 'optuna' not in sys.modules, 'optuna imported'\n"
            "c.sampling = 'bayesian'\nmake_sampler(c, 1)\nassert 'optuna' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_did_you_mean_names_the_logged_metric() -> None:
    assert "did you mean 'accuracy'?" in did_you_mean("Accuracy", ["accuracy", "loss"])
    assert "did you mean 'val_acc'?" in did_you_mean("val_accc", ["val_acc"])
    assert "set primary_metric_name" in did_you_mean("Accuracy", ["loss"])


def test_the_public_surface_is_pinned() -> None:
    import jupyter_compute.sweep as sweep_pkg

    assert sweep_pkg.__all__ == sorted(sweep_pkg.__all__)
    assert set(sweep_pkg.__all__) == {
        "AshaPolicy", "BanditPolicy", "BayesianParameterSampling", "GridParameterSampling",
        "MedianStoppingPolicy", "NoTerminationPolicy", "RandomParameterSampling", "Sweep",
        "SweepConfig", "TruncationSelectionPolicy", "choice", "cli_main", "load_sweep_config",
        "lognormal", "loguniform", "magic_main", "normal", "qlognormal", "qloguniform",
        "qnormal", "quniform", "randint", "sweep", "uniform"}
    for name in sweep_pkg.__all__:
        assert getattr(sweep_pkg, name) is not None
