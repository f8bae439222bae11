"""The reproduce plan and its verdicts, without training: which trials a suite runs, and verdicts
that say only what the numbers show."""

import pytest

from simsiam.config import load_config
from simsiam.errors import ConfigError
from simsiam.reproduce import CLAIMS, Claim, claim_rows, paired_test, plan_trials, render_markdown, verdict


def test_collapse_suite_runs_four_switches_per_seed_with_tags():
    claims, runs, alias = plan_trials(load_config("reproduce-cpu"), "collapse", 2)
    assert len(claims) == 5 and [r.name for r in runs] == [
        "baseline-seed0", "baseline-seed1", "no_stop_grad-seed0", "no_stop_grad-seed1", "no_predictor-seed0",
        "no_predictor-seed1", "fixed_random_predictor-seed0", "fixed_random_predictor-seed1"]
    nsg = runs[3]
    assert nsg.overrides == ("loss.stop_grad=false", "train.seed=1")
    assert nsg.tags["reproduce.table"] == "Fig. 2" and "stop-gradient" in nsg.tags["reproduce.claim"]


def test_switches_with_the_same_config_run_once():
    # reproduce-cpu uses model.bn=hidden: Table 3's "hidden" trial is the baseline itself.
    _, runs, alias = plan_trials(load_config("reproduce-cpu"), "all", 1)
    assert alias["bn_hidden"] == "baseline" and not any(r.key == "bn_hidden" for r in runs)
    assert alias["snapshot_1"] == "baseline"  # Sec. 5's 1-step alternation is SimSiam (test_targets: same weights)
    assert len({r.key for r in runs}) == len(runs) == 18
    epoch = next(r for r in runs if r.key == "snapshot_epoch")
    assert "loss.snapshot_every_steps=64" in epoch.overrides  # 8,192 images / batch 128


def test_one_epoch_snapshot_needs_train_subset_only_in_the_em_suite():
    full = load_config("reproduce-cpu", ["data.train_subset=null"])
    assert len(plan_trials(full, "collapse", 1)[1]) == 4
    with pytest.raises(ConfigError, match="data.train_subset"):
        plan_trials(full, "em", 1)


@pytest.mark.parametrize("suite,seeds,needle", [("tables", 1, "unknown suite 'tables'"),
                                                ("collapse", 0, "--seeds must be at least 1")])
def test_bad_suite_or_seeds_is_a_config_error(suite, seeds, needle):
    with pytest.raises(ConfigError, match=needle):
        plan_trials(load_config("reproduce-cpu"), suite, seeds)


GREATER = Claim("t", "T", "a beats b", "2 vs 1", "greater", ("a", "b"))


def _by_seed(values: list[float]) -> dict[int, float]:
    return dict(enumerate(values))


@pytest.mark.parametrize("a,b,expected", [
    ([70.0, 72.0, 71.0], [60.0, 61.5, 61.0], "holds"),  # gaps 10, 10.5, 10: t = 34.6
    ([70.0, 80.0, 75.0], [69.0, 60.0, 74.5], "inconclusive at this budget"),  # all positive, t = 1.1 < 2.92
    ([70.0, 72.0, 71.0], [71.0, 71.0, 70.0], "inconclusive at this budget"),  # one seed the other way
    ([60.0, 61.0, 62.0], [70.0, 72.0, 71.0], "does not hold at this budget"),
    ([70.0], [60.0], "inconclusive at this budget"),  # one paired seed: no spread
])
def test_an_ordering_holds_only_when_every_paired_seed_agrees_and_the_paired_t_test_passes(a, b, expected):
    got, why = verdict(GREATER, {"a": _by_seed(a), "b": _by_seed(b)}, {"a": [False] * len(a), "b": [False] * len(b)})
    assert got == expected, why


def test_the_verdict_pairs_seeds_not_means():
    # unpaired, the means (71.0 vs 70.0) sit well inside the seed spreads (2.0); paired, a wins by 1 on every seed
    a, b = {0: 69.0, 1: 73.0, 2: 71.0}, {0: 68.0, 1: 72.1, 2: 69.9}
    got, why = paired_test(a, b)
    assert got == "holds" and "paired gap +1.00" in why and "+1.0, +0.9, +1.1" in why
    assert paired_test({0: 69.0, 1: 73.0, 2: 71.0}, {2: 68.0, 1: 72.1, 5: 69.9})[1].count("+") == 3  # seeds 1, 2


@pytest.mark.parametrize("flags,kind,expected", [
    ([True, True], "collapses", "holds"), ([False, False], "collapses", "does not hold at this budget"),
    ([True, False], "collapses", "inconclusive at this budget"), ([False, False], "healthy", "holds"),
    ([True, True], "healthy", "does not hold at this budget"),
])
def test_collapse_verdicts_read_the_diagnostic_on_every_seed(flags, kind, expected):
    claim = Claim("t", "T", "x", "0.1", kind, ("a",))
    assert verdict(claim, {"a": _by_seed([10.0] * len(flags))}, {"a": flags})[0] == expected


def test_rows_carry_what_reproduce_json_promises_and_a_failed_trial_says_so():
    claims = [c for c in CLAIMS if c.suite == "collapse"]
    _, runs, alias = plan_trials(load_config("reproduce-cpu"), "collapse", 2)
    results = {r.name: {"probe_top1": 80.0 + r.seed, "knn_top1": 70.0 + r.seed, "z_std_ratio": 0.9,
                        "collapsed": False, "loss": -0.9} for r in runs}
    for name in ("no_stop_grad-seed0", "no_stop_grad-seed1"):
        results[name] = {"probe_top1": 40.0, "knn_top1": 30.0, "z_std_ratio": 0.01, "collapsed": True}
    del results["no_predictor-seed1"], results["no_predictor-seed0"]  # both failed
    results["fixed_random_predictor-seed0"]["loss"], results["fixed_random_predictor-seed1"]["loss"] = -0.2, -0.3
    rows = claim_rows(claims, runs, alias, results)
    assert [r["verdict"] for r in rows] == ["holds", "holds", "no result", "inconclusive at this budget", "holds"]
    base = rows[0]
    assert {"claim", "table", "paper", "ours_mean", "ours_spread", "seeds", "collapsed", "verdict",
            "trials"} <= set(base)
    assert base["ours_mean"] == 80.5 and base["ours_spread"] == 0.5 and base["seeds"] == 2  # the probe
    assert base["knn_mean"] == 70.5
    assert base["collapsed"] == [False, False] and base["trials"][0]["z_std_ratio"] == 0.9
    md = render_markdown(rows, "t", [])
    assert md.count("\n| ") == 1 + 5 and "80.5 ± 0.5 vs 80.5 ± 0.5" in md  # fixed-random got the same probes
    assert "loss -0.90 ± 0.00 vs -0.25 ± 0.05" in md and "paired gap +0.65" in md  # its loss stayed higher
    assert "Verdicts: 3 holds, 1 no result, 1 inconclusive at this budget." in md


@pytest.mark.parametrize("a,b,expected", [
    ([-0.89, -0.86, -0.91], [-0.24, -0.15, -0.28], "holds"),  # the stop-35 run: the fixed predictor's loss stays high
    ([-0.24, -0.15, -0.28], [-0.89, -0.86, -0.91], "does not hold at this budget"),
    ([-0.89, -0.10, -0.91], [-0.24, -0.15, -0.28], "inconclusive at this budget"),  # one seed the other way
])
def test_a_loss_claim_holds_when_the_first_trial_ends_with_the_lower_loss_on_every_seed(a, b, expected):
    claim = Claim("t", "T", "a's loss ends lower", "high", "greater", ("a", "b"), metric="loss")
    _, runs, _ = plan_trials(load_config("reproduce-cpu"), "collapse", 3)
    results = {r.name: {"probe_top1": 80.0, "knn_top1": 70.0, "z_std_ratio": 0.9, "collapsed": False,
                        "loss": (a if r.key == "baseline" else b)[r.seed]} for r in runs}
    alias = {"a": "baseline", "b": "fixed_random_predictor"}
    row = claim_rows([claim], runs, alias, results)[0]
    assert row["verdict"] == expected, row["why"]
    assert row["metric"] == "loss" and row["ours_mean"] == pytest.approx(sum(a) / 3)
