"""Shadow analysis: pairing by request id, the agreement and delta checks, and the sequential verdict."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_canary.analysis.checks import PredictionDriftCheck
from airflow_canary.analysis.judges.sequential import log_mixture_lr
from airflow_canary.analysis.shadow.checks import (
    PairedPredictionDriftCheck,
    PredictionAgreementCheck,
    PredictionDeltaCheck,
    as_shadow_check,
    population_stability_index,
    shadow_check_from_dict,
)
from airflow_canary.analysis.shadow.judge import (
    ShadowJudge,
    log_betting_e,
    pairs_needed_for_share,
)
from airflow_canary.analysis.shadow.pairing import pair_records
from airflow_canary.analysis.shadow.records import Prediction, PredictionRecord
from airflow_canary.analysis.values import AnalysisError, Status

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def rec(
    rid: str,
    version: str,
    seconds: float = 0.0,
    *,
    cls: Any = 1,
    value: float | None = None,
    scores: dict[str, float] | None = None,
    digest: str = "sha256:x",
    instance: int = 0,
) -> PredictionRecord:
    return PredictionRecord(
        request_id=rid,
        version=version,
        time=T0 + timedelta(seconds=seconds),
        input_hash=digest,
        prediction=Prediction(
            class_=cls,
            value=value,
            scores=None if scores is None else tuple(scores.items()),
        ),
        instance=instance,
    )


def pairing(records: list[PredictionRecord], window: float = 5.0, **kw: Any) -> Any:
    return pair_records(
        records, stable_version="v1", canary_version="v2", window_seconds=window, **kw
    )


def classified(n: int, disagree: set[int], *, seconds_per_pair: float = 0.01) -> Any:
    records = []
    for i in range(n):
        t = i * seconds_per_pair
        records.append(rec(f"r{i}", "v1", t, cls=1))
        records.append(rec(f"r{i}", "v2", t + 0.002, cls=0 if i in disagree else 1))
    # The newest records are what "now" is measured from; keep nothing pending.
    return pairing(records, now=T0 + timedelta(seconds=n * seconds_per_pair + 60))


# -- pairing -------------------------------------------------------------------------------------


def test_pairs_join_by_request_id_and_instance_within_the_window() -> None:
    records = [
        rec("a", "v1", 0),
        rec("a", "v2", 0.5),  # pair
        rec("b", "v1", 0, instance=0),
        rec("b", "v1", 0, instance=1),
        rec("b", "v2", 1, instance=1),  # pair (instance 1); instance 0 unpaired
        rec("c", "v1", 0),
        rec("c", "v2", 30),  # too far apart: both unpaired
        rec("d", "v1", 1, digest="sha256:one"),
        rec("d", "v2", 1, digest="sha256:two"),  # not the same input
        rec("a", "v2", 0.7),  # duplicate
        rec("a", "v3", 0.7),  # another version
        rec("e", "v2", 2),  # a canary record v1 never logged
    ]
    out = pairing(records, now=T0 + timedelta(seconds=100))
    assert [(p.request_id, p.stable.instance) for p in out.pairs] == [("a", 0), ("b", 1)]
    assert out.unpaired_stable == 2 and out.unpaired_canary == 2
    assert out.input_mismatch == 1 and out.duplicates == 1 and out.other_versions == 1
    assert out.stable_records == 5 and out.canary_records == 6
    assert out.accounted
    assert set(out.unpaired_examples) == {"b", "c", "e"}
    text = out.describe()
    assert "2 pair(s) of 5 v1 and 6 v2 record(s)" in text
    assert "2 stable record(s) without a canary answer" in text
    assert "1 pair(s) with different input hashes" in text


def test_a_lone_record_younger_than_the_window_is_pending_not_unpaired() -> None:
    records = [rec("old", "v1", 0), rec("new", "v1", 58), rec("newer", "v2", 60)]
    out = pairing(records, window=5)  # now = the newest record, 60 s
    assert out.unpaired_stable == 1 and out.pending_stable == 1 and out.pending_canary == 1
    assert out.accounted and out.unpaired_examples == ("old",)


def test_records_before_the_phase_are_counted_not_paired() -> None:
    records = [
        rec("old", "v1", 0),
        rec("old", "v2", 0),
        rec("new", "v1", 100),
        rec("new", "v2", 100),
    ]
    out = pairing(records, since=T0 + timedelta(seconds=50))
    assert [p.request_id for p in out.pairs] == ["new"] and out.before_phase == 2
    assert "2 record(s) from before the phase, not used" in out.describe()


@pytest.mark.parametrize("window", [0, -1, math.nan, math.inf, True, "5"])
def test_the_window_must_be_a_positive_number_of_seconds(window: Any) -> None:
    with pytest.raises(AnalysisError, match=f"positive number of seconds, got {window!r}"):
        pairing([], window=window)
    with pytest.raises(AnalysisError, match="must differ, both are 'v1'"):
        pair_records([], stable_version="v1", canary_version="v1", window_seconds=1)


_records = st.lists(
    st.builds(
        rec,
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(["v1", "v2", "v3"]),
        st.floats(0, 20),
        digest=st.sampled_from(["sha256:x", "sha256:y"]),
        instance=st.integers(0, 1),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(_records, st.floats(0.1, 10))
def test_property_every_record_is_paired_or_counted(records: list[Any], window: float) -> None:
    out = pairing(records, window=window)
    assert out.accounted
    assert out.stable_records + out.canary_records + out.other_versions == len(records)
    for pair in out.pairs:
        assert pair.stable.key == pair.canary.key
        assert abs(pair.stable.time - pair.canary.time) <= timedelta(seconds=window)


# -- checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, math.nan, True, "0.02", None])
def test_max_disagreement_must_be_a_share_naming_it(value: Any) -> None:
    with pytest.raises(AnalysisError, match=f"max_disagreement must be a share.*got {value!r}"):
        PredictionAgreementCheck(max_disagreement=value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give max_mean_abs, max_quantile_abs or both"),
        ({"max_mean_abs": 0}, "max_mean_abs must be a positive number, got 0"),
        ({"max_quantile_abs": math.inf}, "max_quantile_abs must be a positive number, got inf"),
        ({"max_mean_abs": 1, "quantile": 1}, "quantile must be a share between 0 and 1, got 1"),
        ({"max_mean_abs": 1, "on": "class"}, "on must be 'value' or 'scores', got 'class'"),
        ({"max_mean_abs": 1, "clip": 0.5}, "clip must be above max_mean_abs 1, got 0.5"),
        ({"max_mean_abs": 1, "min_pairs": 0}, "min_pairs must be a whole number >= 1, got 0"),
    ],
)
def test_delta_check_refuses_bad_limits_naming_them(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        PredictionDeltaCheck(**kwargs)


def test_checks_round_trip_through_their_dict() -> None:
    for check in (
        PredictionAgreementCheck(max_disagreement=0.01, min_pairs=500),
        PredictionDeltaCheck(max_mean_abs=0.1, max_quantile_abs=0.5, on="scores"),
        PairedPredictionDriftCheck(max_psi=0.1, min_predictions=500, epsilon=1e-3),
    ):
        assert shadow_check_from_dict(check.to_dict()) == check
    with pytest.raises(AnalysisError, match="must be one of 'prediction_agreement'"):
        shadow_check_from_dict({"type": "error_rate"})
    with pytest.raises(AnalysisError, match="unknown field.*max_disagreemnt"):
        shadow_check_from_dict({"type": "prediction_agreement", "max_disagreemnt": 0.1})


# -- the verdict ----------------------------------------------------------------------------------

JUDGE = ShadowJudge(alpha=0.01, budget_share=0.2)
AGREE = PredictionAgreementCheck(max_disagreement=0.02)


def test_a_v2_disagreeing_on_ten_percent_fails_early_with_examples() -> None:
    n = 2310
    disagree = set(range(0, n, 10))  # 10%
    out = JUDGE.judge(classified(n, disagree), [AGREE], elapsed_seconds=20, duration_seconds=300)
    assert out.verdict.status is Status.FAIL and out.verdict.final
    assert out.verdict.reason.startswith(
        "v2 disagrees with v1 on 10% of 2,310 paired requests (limit 2%); e-value"
    )
    assert ">= 1/(alpha 0.01 x 0.2 of the rollout's budget) = 500" in out.verdict.reason
    assert "2,310 pair(s) of 2,310 v1 and 2,310 v2 record(s)" in out.verdict.reason
    (result,) = out.verdict.checks
    assert result.status is Status.FAIL and result.canary_value == pytest.approx(0.1)
    examples = out.examples
    assert len(examples) == 5
    assert examples[0] == {
        "check": "prediction-agreement",
        "request_id": "r0",
        "instance": 0,
        "stable": {"version": "v1", "prediction": {"class": 1}},
        "canary": {"version": "v2", "prediction": {"class": 0}},
    }
    data = out.to_dict()
    assert data["verdict"] == "FAIL" and data["phase"] == "shadow"
    assert data["pairing"]["pairs"] == n and len(data["examples"]) == 5


def test_an_identical_model_passes_once_the_duration_is_over_with_enough_pairs() -> None:
    needed = JUDGE.pairs_needed(AGREE)
    during = JUDGE.judge(
        classified(needed, set()), [AGREE], elapsed_seconds=10, duration_seconds=60
    )
    assert during.verdict.status is Status.INCONCLUSIVE and not during.verdict.final
    after = JUDGE.judge(classified(needed, set()), [AGREE], elapsed_seconds=60, duration_seconds=60)
    assert after.verdict.status is Status.PASS and after.verdict.final
    assert after.verdict.checks[0].status is Status.PASS and after.examples == []


def test_too_few_pairs_never_pass_and_say_how_many_were_needed() -> None:
    needed = JUDGE.pairs_needed(AGREE)
    out = JUDGE.judge(classified(37, set()), [AGREE], elapsed_seconds=600, duration_seconds=60)
    assert out.verdict.status is Status.INCONCLUSIVE and out.verdict.final
    assert out.verdict.reason.startswith(
        f"too few pairs to pass: prediction-agreement has 37 comparable pair(s) of the "
        f"{needed:,} needed"
    )
    nothing = JUDGE.judge(pairing([]), [AGREE], elapsed_seconds=600, duration_seconds=60)
    assert nothing.verdict.status is Status.INCONCLUSIVE
    explicit = PredictionAgreementCheck(max_disagreement=0.02, min_pairs=30)
    assert (
        JUDGE.judge(
            classified(37, set()), [explicit], elapsed_seconds=600, duration_seconds=60
        ).verdict.status
        is Status.PASS
    )


def test_a_v2_failing_on_mirrored_requests_leaves_unpaired_records_and_cannot_pass() -> None:
    # v2 answered only a third of the mirrored copies: the rest are counted, not dropped.
    records = []
    for i in range(3000):
        records.append(rec(f"r{i}", "v1", i * 0.01))
        if i % 3 == 0:
            records.append(rec(f"r{i}", "v2", i * 0.01))
    out = JUDGE.judge(
        pairing(records, now=T0 + timedelta(seconds=600)),
        [PredictionAgreementCheck(max_disagreement=0.02, min_pairs=1500)],
        elapsed_seconds=600,
        duration_seconds=60,
    )
    assert out.verdict.status is Status.INCONCLUSIVE
    assert "2,000 stable record(s) without a canary answer" in out.verdict.reason
    assert out.pairing.unpaired_stable == 2000


def test_pairs_without_a_class_are_not_compared_but_reported() -> None:
    records = [rec("a", "v1", cls=None, value=1.0), rec("a", "v2", cls=None, value=1.0)]
    out = JUDGE.judge(pairing(records), [AGREE], elapsed_seconds=0, duration_seconds=60)
    assert "1 pair(s) not comparable" in out.verdict.checks[0].message
    assert out.verdict.checks[0].canary_requests == 0


def test_delta_check_on_values_and_on_scores() -> None:
    check = PredictionDeltaCheck(max_mean_abs=0.05, max_quantile_abs=0.2, quantile=0.99)
    same, shifted = [], []
    for i in range(3000):
        same += [rec(f"r{i}", "v1", value=float(i)), rec(f"r{i}", "v2", value=float(i) + 0.01)]
        shifted += [rec(f"r{i}", "v1", value=float(i)), rec(f"r{i}", "v2", value=float(i) + 0.3)]
    ok = JUDGE.judge(pairing(same), [check], elapsed_seconds=60, duration_seconds=60)
    assert ok.verdict.status is Status.PASS, ok.verdict.reason
    bad = JUDGE.judge(pairing(shifted), [check], elapsed_seconds=1, duration_seconds=60)
    assert bad.verdict.status is Status.FAIL
    assert "|v2 - v1| on 3,000 paired requests: mean 0.3 (limit 0.05)" in bad.verdict.reason
    example = bad.examples[0]
    delta = example["canary"]["prediction"]["value"] - example["stable"]["prediction"]["value"]
    assert delta == pytest.approx(0.3)
    scores = PredictionDeltaCheck(max_quantile_abs=0.1, on="scores", min_pairs=10)
    records = [
        rec("a", "v1", scores={"0": 0.9, "1": 0.1}),
        rec("a", "v2", scores={"0": 0.6, "1": 0.4}),
    ]
    (ev,) = JUDGE.judge(pairing(records), [scores], elapsed_seconds=0, duration_seconds=1).evidence
    assert ev.tests[0].observed == 1.0  # the one pair's largest score change, 0.3, is above 0.1
    # No pair yet: the limits, not a share of nothing.
    (none,) = JUDGE.judge(pairing([]), [check], elapsed_seconds=0, duration_seconds=1).evidence
    assert none.headline == (
        "|v2 - v1|: no paired request yet (mean limit 0.05, q99 limit: at most 1% above 0.2)"
    )


# -- statistics ------------------------------------------------------------------------------------


def test_the_disagreement_e_value_keeps_the_error_budget_at_the_limit() -> None:
    # A v2 disagreeing exactly at the limit, judged every 10 pairs up to 5,000: the share of
    # runs that ever FAIL stays below alpha x budget_share (Ville's inequality), here 0.2%.
    rng = np.random.default_rng(7)
    runs, horizon, p0 = 2000, 5000, 0.02
    draws = rng.random((runs, horizon)) < p0
    k = np.cumsum(draws, axis=1)[:, 9::10]
    n = np.arange(10, horizon + 1, 10)
    log_e = log_mixture_lr(k, n - k, p0)
    false_fail = float(np.mean((log_e >= JUDGE.log_threshold).any(axis=1)))
    assert false_fail <= 0.002 + 3 * math.sqrt(0.002 / runs)


def test_the_betting_e_value_has_mean_at_most_one_under_the_null_and_ignores_order() -> None:
    rng = random.Random(3)
    mu0 = 0.25
    values = [[min(1.0, rng.expovariate(1 / mu0)) for _ in range(50)] for _ in range(4000)]
    mean_e = sum(math.exp(log_betting_e(v, mu0)) for v in values) / len(values)
    assert mean_e <= 1.05  # the clipped mean is below mu0, so E[e] <= 1 (Monte Carlo slack)
    sample = values[0]
    assert log_betting_e(sample, mu0) == pytest.approx(log_betting_e(sorted(sample), mu0))


def test_pairs_needed_shrinks_as_disagreement_grows() -> None:
    needed = [pairs_needed_for_share(0.01, r, JUDGE.log_threshold) for r in (0.02, 0.05, 0.1)]
    assert needed[0] > needed[1] > needed[2] > 0
    with pytest.raises(ValueError, match="must be above the limit"):
        pairs_needed_for_share(0.02, 0.02, JUDGE.log_threshold)
    assert JUDGE.pairs_needed(AGREE) == pairs_needed_for_share(0.02, 0.04, JUDGE.log_threshold)


# -- prediction drift on the paired sample ----------------------------------------------------------


def drifted(n: int, stable_a: float, moved: float) -> Any:
    """n pairs: v1 predicts "A" on ``stable_a`` of them, "B" on the rest; v2 predicts as v1
    except on ``moved`` of v1's "A" pairs, where it predicts "B"."""
    a_count = round(n * stable_a)
    moved_count = round(a_count * moved)
    records = []
    for i in range(n):
        v1 = "A" if i < a_count else "B"
        v2 = "B" if i < moved_count else v1
        records += [rec(f"r{i}", "v1", i * 0.01, cls=v1), rec(f"r{i}", "v2", i * 0.01, cls=v2)]
    return pairing(records, now=T0 + timedelta(seconds=n * 0.01 + 60))


DRIFT = PredictionDriftCheck(max_psi=0.2)  # the live check, as a user writes it


def test_the_live_drift_check_is_taken_on_the_pairs_with_its_limit_minimum_and_floor() -> None:
    live = PredictionDriftCheck(max_psi=0.15, min_predictions=40, name="drift", epsilon=1e-3)
    check = as_shadow_check(live)
    assert check == PairedPredictionDriftCheck(
        max_psi=0.15, min_predictions=40, name="drift", epsilon=1e-3
    )
    assert check.to_dict() == {
        "type": "prediction_drift",
        "max_psi": 0.15,
        "min_predictions": 40,
        "name": "drift",
        "epsilon": 1e-3,
    }
    assert as_shadow_check(check.to_dict()) == check
    assert JUDGE.pairs_needed(check) == 40


def test_identical_predictions_have_psi_zero_and_pass_at_the_end() -> None:
    out = JUDGE.judge(drifted(500, 0.8, 0.0), [DRIFT], elapsed_seconds=60, duration_seconds=60)
    assert out.verdict.status is Status.PASS and out.verdict.final, out.verdict.reason
    (result,) = out.verdict.checks
    assert result.status is Status.PASS and result.canary_value == 0.0
    assert result.statistic is None  # no e-value
    assert "outside the e-value budget" in result.message
    assert out.verdict.reason.startswith(
        "PSI 0.000 of v2's predicted classes against v1's on 500 paired requests (limit 0.2)"
    )


def test_a_v2_moving_30_percent_of_class_a_to_b_fails_at_the_end_with_the_psi() -> None:
    # v1: A on 80%, B on 20%; v2 predicts B on 30% of v1's A: A 56%, B 44%.
    expected = (0.56 - 0.8) * math.log(0.56 / 0.8) + (0.44 - 0.2) * math.log(0.44 / 0.2)
    assert expected == pytest.approx(0.2748, abs=1e-4)
    sample = drifted(1000, 0.8, 0.3)
    during = JUDGE.judge(sample, [DRIFT], elapsed_seconds=30, duration_seconds=60)
    assert during.verdict.status is Status.INCONCLUSIVE and not during.verdict.final
    assert during.verdict.checks[0].status is Status.INCONCLUSIVE  # a point estimate: at the end
    out = JUDGE.judge(sample, [DRIFT], elapsed_seconds=60, duration_seconds=60)
    assert out.verdict.status is Status.FAIL and out.verdict.final
    assert out.verdict.reason.startswith(
        "PSI 0.275 of v2's predicted classes against v1's on 1,000 paired requests exceeds "
        "max_psi 0.2, judged on its value at the end of the phase"
    )
    (result,) = out.verdict.checks
    assert result.status is Status.FAIL and result.canary_value == pytest.approx(expected)
    assert [e["request_id"] for e in out.examples] == ["r0", "r1", "r2", "r3", "r4"]
    assert out.examples[0]["stable"]["prediction"] == {"class": "A"}
    assert out.examples[0]["canary"]["prediction"] == {"class": "B"}


def test_drift_spends_none_of_the_e_value_budget() -> None:
    # The phase's e-value is the agreement check's alone: drift neither adds nor dilutes.
    sample = drifted(1000, 0.8, 0.3)
    alone = JUDGE.judge(sample, [AGREE], elapsed_seconds=1, duration_seconds=60)
    both = JUDGE.judge(sample, [AGREE, DRIFT], elapsed_seconds=1, duration_seconds=60)
    assert both.log_e == alone.log_e
    only_drift = JUDGE.judge(sample, [DRIFT], elapsed_seconds=1, duration_seconds=60)
    assert only_drift.log_e == 0.0 and only_drift.verdict.status is Status.INCONCLUSIVE


def test_too_few_pairs_for_drift_never_pass() -> None:
    check = PredictionDriftCheck(max_psi=0.2, min_predictions=100)
    out = JUDGE.judge(drifted(99, 0.8, 0.0), [check], elapsed_seconds=60, duration_seconds=60)
    assert out.verdict.status is Status.INCONCLUSIVE and out.verdict.final
    assert out.verdict.reason.startswith(
        "too few pairs to pass: prediction-drift has 99 comparable pair(s) of the 100 needed"
    )
    # A drift far above the limit on too few pairs is not a FAIL either: no point estimate yet.
    few = JUDGE.judge(drifted(50, 0.8, 0.9), [check], elapsed_seconds=60, duration_seconds=60)
    assert few.verdict.status is Status.INCONCLUSIVE
    nothing = JUDGE.judge(pairing([]), [check], elapsed_seconds=60, duration_seconds=60)
    assert nothing.verdict.status is Status.INCONCLUSIVE
    assert "PSI not measured (no comparable pair)" in nothing.verdict.checks[0].message


@pytest.mark.parametrize("value", [0, -0.1, math.inf, math.nan, None, "0.2", True])
def test_bad_max_psi_is_named_when_the_check_is_built(value: Any) -> None:
    with pytest.raises(
        AnalysisError, match=f"prediction-drift: max_psi must be a positive number.*got {value!r}"
    ):
        PredictionDriftCheck(max_psi=value)
    with pytest.raises(
        AnalysisError, match=f"prediction-drift: max_psi must be a positive number.*got {value!r}"
    ):
        PairedPredictionDriftCheck(max_psi=value)


def test_a_shadow_phase_needs_at_least_one_pair_for_drift() -> None:
    with pytest.raises(
        AnalysisError, match="min_predictions must be a whole number >= 1 in a shadow phase.*got 0"
    ):
        as_shadow_check(PredictionDriftCheck(max_psi=0.2, min_predictions=0))


def test_psi_floors_a_class_one_side_never_predicts() -> None:
    assert population_stability_index({"A": 5}, {"A": 7}, 1e-4) == 0.0
    floor = population_stability_index({"A": 10}, {"A": 5, "B": 5}, 1e-4)
    expected = (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert floor == pytest.approx(expected)
    with pytest.raises(ValueError, match="both sides need counts"):
        population_stability_index({}, {"A": 1}, 1e-4)
