"""Early-termination policies as pure functions of metric histories (plain lists)."""

from __future__ import annotations

import pytest

from jupyter_compute.sweep.policies import (
    AshaPolicy,
    BanditPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    Stop,
    TruncationSelectionPolicy,
)


def stopped(stops: list[Stop]) -> set:
    return {s.trial for s in stops}


# -- Bandit -----------------------------------------------------------------------------


def test_bandit_reason_reads_like_the_issue() -> None:
    histories = {"best": [0.70, 0.75, 0.80, 0.83], "slow": [0.50, 0.55, 0.60, 0.61]}
    assert BanditPolicy(slack_factor=0.2).stops(histories, running={"slow"},
                                                metric="Accuracy") == [
        Stop("slow", 4, "interval 4: Accuracy 0.61 < best 0.83/(1+0.2) = 0.6917")]


def test_bandit_keeps_trials_within_the_slack() -> None:
    histories = {"a": [0.83], "b": [0.70], "c": [0.69]}
    # 0.83 / 1.2 = 0.6917: b is inside, c is outside.
    assert stopped(BanditPolicy(slack_factor=0.2).stops(histories)) == {"c"}


def test_bandit_slack_amount_and_minimize() -> None:
    histories = {"a": [0.8], "b": [0.65], "c": [0.55]}
    assert stopped(BanditPolicy(slack_amount=0.2).stops(histories)) == {"c"}  # < 0.8 - 0.2
    losses = {"a": [0.5], "b": [0.59], "c": [0.61]}
    decisions = BanditPolicy(slack_factor=0.2).stops(losses, maximize=False, metric="loss")
    assert decisions == [Stop("c", 1, "interval 1: loss 0.61 > best 0.5*(1+0.2) = 0.6")]
    assert stopped(BanditPolicy(slack_amount=0.1).stops(losses, maximize=False)) == {"c"}


def test_bandit_uses_each_trials_best_so_far() -> None:
    # HyperDrive compares the run's best reported value: a dip does not stop it.
    histories = {"a": [0.8, 0.8], "b": [0.79, 0.3]}
    assert BanditPolicy(slack_factor=0.1).stops(histories) == []


def test_a_young_trial_is_not_judged_by_what_older_trials_reached_later() -> None:
    histories = {"old": [0.5, 0.6, 0.7, 0.8, 0.9], "young": [0.45]}
    # At interval 1 the best is 0.5 (0.45 > 0.5/1.2), though old ends at 0.9.
    assert BanditPolicy(slack_factor=0.2).stops(histories, running={"young"}) == []
    histories["young"] += [0.46, 0.47]
    [stop] = BanditPolicy(slack_factor=0.2).stops(histories, running={"young"})
    assert stop.interval == 3 and "best 0.7/(1+0.2)" in stop.reason


@pytest.mark.parametrize("interval,delay,reported,judged", [
    (1, 0, 1, 1), (1, 0, 7, 7), (2, 0, 1, None), (2, 0, 3, 2), (3, 0, 8, 6),
    (1, 5, 4, None), (1, 5, 5, 5), (2, 5, 5, None), (2, 5, 6, 6), (2, 5, 9, 8),
    (10, 200, 150, None), (10, 200, 205, 200)])
def test_evaluation_interval_and_delay_follow_hyperdrive(
        interval: int, delay: int, reported: int, judged: int | None) -> None:
    # "the policy applies every multiple of evaluation_interval that is greater than or
    # equal to delay_evaluation"; a trial is judged at the last such interval it reached.
    policy = BanditPolicy(slack_factor=0.1, evaluation_interval=interval, delay_evaluation=delay)
    assert policy.judged_at(reported) == judged
    histories = {"good": [1.0] * reported, "bad": [0.1] * reported}
    decisions = policy.stops(histories, running={"bad"})
    assert [s.interval for s in decisions] == ([] if judged is None else [judged])


def test_finished_trials_are_never_stopped() -> None:
    histories = {"a": [0.9], "b": [0.1]}
    assert BanditPolicy(slack_factor=0.1).stops(histories, running={"a"}) == []


# -- Median stopping --------------------------------------------------------------------


def test_median_stopping_known_answer() -> None:
    histories = {
        "a": [0.9, 0.9, 0.9],   # running average 0.9
        "b": [0.7, 0.7, 0.7],   # 0.7
        "c": [0.5, 0.6, 0.7],   # 0.6 — best 0.7 equals the median: kept
        "d": [0.2, 0.3, 0.4],   # 0.3, best 0.4 < median
    }
    # Median of running averages (0.3, 0.6, 0.7, 0.9) is 0.65.
    decisions = MedianStoppingPolicy().stops(histories, metric="Accuracy")
    assert decisions == [Stop("d", 3, "interval 3: best Accuracy 0.4 < median 0.65 of 4 "
                                      "trials' running averages")]


def test_median_stopping_minimize_and_delay() -> None:
    histories = {"a": [1.0, 0.5], "b": [1.0, 0.6], "c": [3.0, 2.9]}
    assert stopped(MedianStoppingPolicy().stops(histories, maximize=False)) == {"c"}
    assert MedianStoppingPolicy(delay_evaluation=3).stops(histories, maximize=False) == []


def test_median_stopping_alone_never_stops() -> None:
    assert MedianStoppingPolicy().stops({"a": [0.1, 0.0]}) == []


# -- Truncation selection ---------------------------------------------------------------


def test_truncation_selection_cuts_the_lowest_percentage() -> None:
    histories = {t: [v, v] for t, v in zip("abcde", (0.9, 0.8, 0.7, 0.6, 0.5))}
    decisions = TruncationSelectionPolicy(truncation_percentage=20).stops(histories, metric="acc")
    assert decisions == [Stop("e", 2, "interval 2: acc 0.5 ranks 5 of 5, in the lowest 20% "
                                      "(1 trial)")]
    assert stopped(TruncationSelectionPolicy(truncation_percentage=40).stops(histories)) == \
        {"d", "e"}
    # Fewer trials than one percentage step: nobody is cut.
    assert TruncationSelectionPolicy(truncation_percentage=20).stops(
        {"a": [1.0], "b": [0.1]}) == []


def test_truncation_ranks_by_the_value_at_the_interval_and_ties_survive() -> None:
    histories = {"a": [0.1, 0.9], "b": [0.2, 0.2], "c": [0.2, 0.2], "d": [0.3, 0.3],
                 "e": [0.5, 0.5]}
    policy = TruncationSelectionPolicy(truncation_percentage=20, evaluation_interval=2)
    # At interval 2 a's 0.1 at interval 1 does not count; b and c tie for last: both live.
    assert policy.stops(histories) == []
    assert policy.stops({**histories, "c": [0.2, 0.19]}, running={"a", "b", "c"})[0].trial == "c"


def test_truncation_can_leave_finished_trials_out() -> None:
    histories = {"done1": [0.1], "done2": [0.2], "x": [0.5], "y": [0.6], "z": [0.7]}
    policy = TruncationSelectionPolicy(truncation_percentage=40)
    assert policy.stops(histories, running={"x", "y", "z"}, finished={"done1", "done2"}) == []
    strict = TruncationSelectionPolicy(truncation_percentage=40, exclude_finished_jobs=True)
    # Among x, y, z alone 40% is one trial: x.
    assert stopped(strict.stops(histories, running={"x", "y", "z"},
                                finished={"done1", "done2"})) == {"x"}


# -- ASHA -------------------------------------------------------------------------------


def test_asha_rungs_and_cutoff() -> None:
    policy = AshaPolicy(reduction_factor=3, min_interval=1)
    assert [policy.judged_at(n) for n in (0, 1, 2, 3, 8, 9, 30)] == [None, 1, 1, 3, 3, 9, 27]
    assert AshaPolicy(reduction_factor=3, max_interval=5).judged_at(30) == 3
    # The first trial at a rung goes on; at rung 1 three trials, only the top third lives.
    assert policy.stops({"a": [0.5]}) == []
    decisions = policy.stops({"a": [0.9], "b": [0.5], "c": [0.7]}, metric="acc")
    assert stopped(decisions) == {"b", "c"}
    assert decisions[0].reason.startswith("rung at interval 1: acc 0.5 < 0.7667, the top-1/3 "
                                          "cut-off of 3 trials")
    # Minimize mirrors it.
    assert stopped(policy.stops({"a": [0.9], "b": [0.5], "c": [0.7]}, maximize=False)) == \
        {"a", "c"}


def test_asha_judges_at_the_last_rung_reached() -> None:
    policy = AshaPolicy(reduction_factor=2, min_interval=2)  # rungs 2, 4, 8
    histories = {"a": [0.1, 0.9, 0.9, 0.9, 0.9], "b": [0.9, 0.5, 0.5, 0.4, 0.4]}
    [stop] = policy.stops(histories, running={"b"})
    assert stop.interval == 4  # b has 5 reports: rung 4; 0.4 is in the lower half


# -- none -------------------------------------------------------------------------------


def test_no_termination_stops_nothing() -> None:
    assert NoTerminationPolicy().stops({"a": [1.0], "b": [0.0]}) == []


def test_every_policy_describes_itself() -> None:
    assert BanditPolicy(slack_factor=0.2).describe() == \
        "BanditPolicy(evaluation_interval=1, slack_factor=0.2, delay_evaluation=0)"
    assert NoTerminationPolicy().describe() == "NoTerminationPolicy()"
    assert AshaPolicy().to_dict() == {"type": "AshaPolicy", "reduction_factor": 3,
                                      "min_interval": 1}


def test_float_rounding_is_no_reason_to_stop() -> None:
    # The running average of seven 0.9s is 0.9000000000000001 in floating point.
    histories = {"a": [0.9] * 7, "b": [0.9] * 7}
    assert MedianStoppingPolicy().stops(histories) == []
    assert BanditPolicy(slack_amount=0.0).stops({"a": [0.1 + 0.2], "b": [0.3]}) == []
