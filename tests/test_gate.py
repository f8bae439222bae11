"""The champion gate's decision (pure: no server) and the eval set it compares on."""

import torch

from conftest import tiny_config
from simsiam.evaluation import eval_set
from simsiam.tracking.registry import gate_decision

SET_A, SET_B = "probe trained on fm@a (2000 images, 5 epochs), tested on fm@a (500 images)", "another set"


def test_a_better_probe_on_the_same_eval_set_is_promoted():
    promote, reasons = gate_decision(70.0, False, 10.0, 65.0, "1", SET_A, SET_A)
    assert promote and reasons == ["probe/top1 70.00 >= floor 10.00, not collapsed, beats champion v1 (65.00)"]


def test_probes_from_different_or_unrecorded_eval_sets_are_not_compared_in_one_reason():
    for ours, theirs in [(SET_B, SET_A), (SET_A, None), (None, SET_A)]:
        promote, reasons = gate_decision(99.0, False, 10.0, 65.0, "3", ours, theirs)
        assert not promote and len(reasons) == 1 and "not compared with champion v3 (65.00)" in reasons[0]
        assert f"measured on {ours or 'an unrecorded set'}, the champion on {theirs or 'an unrecorded set'}" \
            in reasons[0]


def test_without_a_champion_the_eval_set_does_not_block_the_first_version():
    assert gate_decision(50.0, False, 10.0, None, None, SET_A, None)[0]


class _Source:
    def __init__(self, name, n, ref=None):
        self.name, self.labels, self.ref = name, torch.zeros(n), ref

    def __len__(self):
        return len(self.labels)


class _Ref:
    name, version = "fm-2k", "abc123"


def test_eval_set_names_staged_version_local_split_sizes_and_probe_epochs():
    got = eval_set(tiny_config("eval.probe_epochs=7", "train.seed=3"), _Source("fashion-mnist", 2000, _Ref()),
                   _Source("fashion-mnist", 10000))
    assert got == {"eval.set": "probe trained on fm-2k@abc123 (2000 images, 7 epochs), tested on local fashion-mnist "
                               "(10000 images)",
                   "eval.seed": "3", "eval.test_images": "10000", "eval.train_images": "2000"}


def test_eval_set_of_a_probe_on_a_train_sample_says_how_many_of_how_many():
    got = eval_set(tiny_config("eval.probe_train_samples=500"), _Source("fashion-mnist", 2000, _Ref()),
                   _Source("fashion-mnist", 10000))
    assert got["eval.set"].startswith("probe trained on fm-2k@abc123 (500 of 2000 images, ")
    assert got["eval.train_images"] == "500"


FREE_A = "4096 training images of photos (seed 0), 1024 view pairs, 1024-d features"


def test_the_gate_refuses_in_one_line_to_compare_a_rankme_challenger_with_a_probe_gated_champion():
    for ours, theirs in [("label_free/rankme", "probe/top1"), ("probe/top1", "label_free/rankme")]:
        promote, reasons = gate_decision(500.0, False, 10.0, 65.0, "2", FREE_A, FREE_A, criterion=ours,
                                         champ_criterion=theirs)
        assert not promote and len(reasons) == 1
        assert reasons[0] == (f"{ours} 500.00 not compared with champion v2, gated on {theirs} (65.00): the criteria "
                              "differ (judge both with the same evaluation data, or promote by hand)")


def test_without_labels_the_gate_checks_collapse_first_then_compares_rankme_and_has_no_floor():
    rankme = dict(criterion="label_free/rankme", champ_criterion="label_free/rankme")
    collapsed = gate_decision(300.0, True, 50.0, 100.0, "1", FREE_A, FREE_A, **rankme)
    assert not collapsed[0] and collapsed[1][0].startswith("collapsed") and len(collapsed[1]) == 1
    first = gate_decision(3.0, False, 50.0, None, None, FREE_A, None, **rankme)  # the probe floor is in %
    assert first == (True, ["label_free/rankme 3.00, not collapsed, no previous champion"])
    better = gate_decision(130.0, False, 50.0, 120.0, "4", FREE_A, FREE_A, **rankme)
    assert better == (True, ["label_free/rankme 130.00, not collapsed, beats champion v4 (120.00)"])
    worse = gate_decision(110.0, False, 50.0, 120.0, "4", FREE_A, FREE_A, **rankme)
    assert worse == (False, ["label_free/rankme 110.00 does not beat champion v4 (120.00)"])
    assert gate_decision(float("nan"), False, 50.0, None, None, FREE_A, None, **rankme)[0] is False  # not judged
    other_sample = gate_decision(130.0, False, 50.0, 120.0, "4", FREE_A, "another sample", **rankme)
    assert not other_sample[0] and "measured on" in other_sample[1][0]


def test_a_label_free_judge_where_lower_is_better_promotes_the_lower_value():
    alignment = dict(criterion="label_free/alignment", champ_criterion="label_free/alignment")
    assert gate_decision(0.10, False, 50.0, 0.20, "4", FREE_A, FREE_A, **alignment)[0]
    assert not gate_decision(0.30, False, 50.0, 0.20, "4", FREE_A, FREE_A, **alignment)[0]
