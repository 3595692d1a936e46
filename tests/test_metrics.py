import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from vlml.errors import ConfigError, DataError
from vlml.metrics import (
    MapReport,
    average_precision,
    map_report,
    mean_average_precision,
    pseudo_label_quality,
    pseudo_quality,
    threshold_metrics,
)


def sklearn_ap(scores, targets):
    """Per-column sklearn AP on the known (!= -1) entries; NaN where no known positive."""
    out = []
    for c in range(scores.shape[1]):
        known = targets[:, c] != -1
        y, s = targets[known, c], scores[known, c]
        out.append(average_precision_score(y, s) if (y == 1).any() else np.nan)
    return np.array(out)


def random_case(rng, dtype, unknown=0.2, decimals=1):
    n, c = int(rng.integers(1, 80)), int(rng.integers(1, 7))
    scores = rng.normal(size=(n, c))
    if decimals is not None:
        scores = np.round(scores, decimals)  # heavy ties
    targets = (rng.random((n, c)) < rng.uniform(0.05, 0.6)).astype(np.int8)
    targets[rng.random((n, c)) < unknown] = -1
    return scores.astype(dtype), targets


# ----------------------------------------------------------------------------- AP vs sklearn

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("unknown", [0.0, 0.3])
def test_ap_matches_sklearn_with_ties(dtype, unknown):
    rng = np.random.default_rng(int(unknown * 10) + (dtype == np.float32))
    for _ in range(60):
        scores, targets = random_case(rng, dtype, unknown=unknown)
        ours, ref = average_precision(scores, targets), sklearn_ap(scores, targets)
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ap_matches_sklearn_without_ties_and_with_mostly_ties(dtype):
    rng = np.random.default_rng(7)
    for decimals in (None, 0):
        for _ in range(20):
            scores, targets = random_case(rng, dtype, decimals=decimals)
            np.testing.assert_allclose(average_precision(scores, targets),
                                       sklearn_ap(scores, targets), atol=1e-9, equal_nan=True)


def test_ap_matches_sklearn_on_a_larger_matrix_with_unknowns():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((3000, 20)), 2).astype(np.float32)
    targets = (rng.random((3000, 20)) < 0.05).astype(np.int8)
    targets[rng.random((3000, 20)) < 0.4] = -1
    np.testing.assert_allclose(average_precision(scores, targets),
                               sklearn_ap(scores, targets), atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negative_zero_ties_with_zero(dtype):
    scores = np.array([[-0.0], [0.0], [0.0], [-1.0]], dtype=dtype)
    targets = np.array([[1], [0], [0], [1]])
    # One group {-0, 0, 0} with 1 positive in 3, then the last positive: (1/3 + 2/4) / 2.
    np.testing.assert_allclose(average_precision(scores, targets), [(1 / 3 + 2 / 4) / 2])
    np.testing.assert_allclose(average_precision(scores, targets), sklearn_ap(scores, targets))


# ----------------------------------------------------------------------------- AP by hand

def test_ap_perfect_ranking_is_one():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.1, 0.8]])
    targets = np.array([[1, 0], [1, 1], [0, 1]])
    np.testing.assert_allclose(average_precision(scores, targets), [1.0, 1.0])


def test_ap_hand_computed_with_a_tie_and_an_unknown():
    # Descending: 0.95 unknown (ignored), 0.9 neg, {0.5 pos, 0.5 neg} one threshold, 0.1 pos.
    # Precision where recall rises: 1/3 (after the tie group), then 2/4.  AP = (1/3 + 1/2) / 2.
    scores = np.array([[0.95], [0.9], [0.5], [0.5], [0.1]])
    targets = np.array([[-1], [0], [1], [0], [1]])
    np.testing.assert_allclose(average_precision(scores, targets), [5 / 12])


def test_ap_all_scores_equal_is_the_prevalence():
    scores = np.full((4, 1), 0.3)
    np.testing.assert_allclose(average_precision(scores, np.array([[1], [0], [0], [0]])), [0.25])


def test_ap_unknown_entries_are_not_negatives():
    scores = np.array([[0.9], [0.8], [0.7]])
    # Treating the -1 as a negative would give (1/2 + 2/3)/2; excluding it gives 1.
    assert average_precision(scores, np.array([[-1], [1], [1]]))[0] == pytest.approx(1.0)


def test_ap_class_without_known_positive_is_nan():
    scores = np.array([[0.9, 0.2], [0.1, 0.8]])
    ap = average_precision(scores, np.array([[1, -1], [0, 0]]))
    assert ap[0] == 1.0 and np.isnan(ap[1])


def test_ap_accepts_bool_targets_and_int_scores():
    scores = np.array([[3, 1], [2, 2], [1, 3]])
    targets = np.array([[True, False], [False, True], [True, True]])
    np.testing.assert_allclose(average_precision(scores, targets),
                               sklearn_ap(scores.astype(float), targets.astype(np.int8)))


def test_ap_accepts_torch_tensors():
    rng = np.random.default_rng(0)
    scores, targets = random_case(rng, np.float32)
    expected = average_precision(scores, targets)
    got = average_precision(torch.from_numpy(scores), torch.from_numpy(targets))
    np.testing.assert_allclose(got, expected, equal_nan=True)
    half = torch.tensor([[0.9, 0.1], [0.5, 0.7]], dtype=torch.bfloat16, requires_grad=True)
    np.testing.assert_allclose(average_precision(half, torch.tensor([[1, 0], [0, 1]])), [1, 1])


def test_ap_of_empty_matrix_is_all_nan():
    assert np.isnan(average_precision(np.zeros((0, 3)), np.zeros((0, 3)))).all()


# ----------------------------------------------------------------------- mAP and empty classes

def _scores_targets_with_empty_class():
    scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7], [0.6, 0.4, 0.5]])
    targets = np.array([[1, 0, 0], [0, -1, 1], [0, 0, 0]])  # class 1: no known positive
    return scores, targets


def test_map_skips_empty_classes_with_a_warning():
    scores, targets = _scores_targets_with_empty_class()
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 classes: 1 with no known positive "
                                         r"\('dog'\)"):
        report = map_report(scores, targets, class_names=["cat", "dog", "cow"])
    assert isinstance(report, MapReport)
    assert report.map == pytest.approx(100.0)  # both scored classes are ranked perfectly
    assert report.n_skipped == 1 and report.skipped_classes == ("dog",)
    assert report.empty_classes == ("dog",)
    assert np.isnan(report.per_class_ap[1])
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 classes: .*\(1\)$"):
        assert mean_average_precision(scores, targets) == pytest.approx(100.0)


def test_map_zero_policy_counts_empty_classes_as_zero_silently():
    scores, targets = _scores_targets_with_empty_class()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = map_report(scores, targets, empty="zero")
        value = mean_average_precision(scores, targets, empty="zero")
    assert value == report.map == pytest.approx(200.0 / 3)
    assert report.n_skipped == 0 and report.skipped_classes == ()
    assert report.empty_classes == (1,)
    assert report.per_class_ap[1] == 0.0


def test_map_warning_lists_only_the_first_few_empty_classes():
    scores = np.random.default_rng(0).random((4, 9))
    targets = np.zeros((4, 9), dtype=np.int8)
    targets[0, 0] = 1
    with pytest.warns(UserWarning, match=r"skipped 8 of 9 classes.*\(3 more\)"):
        report = map_report(scores, targets)
    assert report.n_skipped == 8 and report.skipped_classes == tuple(range(1, 9))


def test_map_with_no_scorable_class_is_nan():
    with pytest.warns(UserWarning, match="no mAP is reported; skipped 2 of 2"):
        assert np.isnan(mean_average_precision(np.ones((2, 2)), np.zeros((2, 2))))


def test_map_skips_classes_without_a_known_negative_whatever_the_policy():
    # class 0: positive and negative known (AP 1/2); class 1: only positives known (AP 1 for
    # any scores, skipped); class 2: no known positive (skipped, or AP 0 under "zero")
    scores = np.array([[0.1, 0.9, 0.3], [0.9, 0.1, 0.2], [0.5, 0.5, 0.1]])
    targets = np.array([[1, 1, 0], [0, -1, -1], [-1, 1, 0]])
    with pytest.warns(UserWarning, match=r"skipped 2 of 3 classes: 1 with no known positive "
                                         r"\('c'\); 1 with no known negative, whose AP would "
                                         r"be 1 whatever the scores \('b'\)"):
        report = map_report(scores, targets, class_names=["a", "b", "c"])
    assert report.map == pytest.approx(50.0)
    assert report.n_skipped == 2 and report.skipped_classes == ("b", "c")
    assert report.no_negative_classes == ("b",) and report.empty_classes == ("c",)
    assert np.isnan(report.per_class_ap[1:]).all() and report.available
    assert average_precision(scores, targets)[1] == 1.0   # per-class AP stays sklearn's
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 classes: 1 with no known negative"):
        zero = map_report(scores, targets, empty="zero")
    assert zero.map == pytest.approx(25.0)                # (1/2 + 0) / 2: 'b' still skipped
    assert zero.skipped_classes == (1,) and zero.per_class_ap[2] == 0.0


def test_map_of_positives_only_targets_is_unavailable_and_says_why():
    scores = np.random.default_rng(0).random((5, 2))
    targets = np.array([[1, -1], [-1, 1], [1, -1], [-1, 1], [1, 1]])
    with pytest.warns(UserWarning, match="no mAP is reported"):
        report = map_report(scores, targets, class_names=["cat", "dog"])
    assert np.isnan(report.map) and not report.available
    assert report.n_skipped == 2
    assert report.note() == (
        "no class has both a known positive and a known negative among the evaluated labels, "
        "so no mAP is reported; skipped 2 of 2 classes: 2 with no known negative, whose AP "
        "would be 1 whatever the scores ('cat', 'dog')")
    with pytest.warns(UserWarning):
        assert np.isnan(mean_average_precision(scores, targets, empty="zero"))


def test_map_note_is_empty_when_every_class_is_scored():
    report = map_report(np.array([[0.9], [0.1]]), np.array([[1], [0]]))
    assert report.note() == "" and report.n_skipped == 0 and report.map == 100.0


def test_map_is_100_times_mean_ap():
    rng = np.random.default_rng(5)
    scores, targets = random_case(rng, np.float64, unknown=0.0)
    targets[0] = 1  # every class has a positive
    assert mean_average_precision(scores, targets) == pytest.approx(
        100 * sklearn_ap(scores, targets).mean(), abs=1e-9)


def test_map_rejects_an_unknown_empty_policy():
    with pytest.raises(ConfigError, match=r"'drop'.*'skip', 'zero'"):
        mean_average_precision(np.ones((2, 2)), np.ones((2, 2)), empty="drop")


# ----------------------------------------------------------------------------- threshold metrics

SCORES_3x3 = np.array([[0.9, 0.6, 0.1],
                       [0.4, 0.7, 0.8],
                       [0.2, 0.3, 0.55]])
TARGETS_3x3 = np.array([[1, 0, 1],
                        [1, 1, -1],
                        [0, 0, 1]])


def test_threshold_metrics_hand_computed_at_half():
    # Predicted (>= 0.5): rows {0} for class 0, {0, 1} for class 1, {1, 2} for class 2; (1, 2)
    # is unknown and not counted.  Per class (TP, FP, FN): (1, 0, 1), (1, 1, 0), (1, 0, 1).
    m = threshold_metrics(SCORES_3x3, TARGETS_3x3, threshold=0.5)
    cp, cr = (1 + 0.5 + 1) / 3, (0.5 + 1 + 0.5) / 3
    op, orr = 3 / 4, 3 / 5
    expected = {"CP": cp, "CR": cr, "CF1": 2 * cp * cr / (cp + cr),
                "OP": op, "OR": orr, "OF1": 2 * op * orr / (op + orr)}
    assert m == pytest.approx({k: 100 * v for k, v in expected.items()})
    assert threshold_metrics(SCORES_3x3, TARGETS_3x3) == m  # 0.5 is the default


def test_threshold_metrics_hand_computed_top1():
    # Top-1: class 0 for row 0, class 2 for rows 1 and 2.  Class 1 predicts nothing, so its
    # precision counts as 0 (reference convention).  (TP, FP, FN): (1,0,1), (0,0,1), (1,0,1).
    m = threshold_metrics(SCORES_3x3, TARGETS_3x3, top_k=1)
    cp, cr = 2 / 3, 1 / 3
    op, orr = 1.0, 2 / 5
    expected = {"CP": cp, "CR": cr, "CF1": 2 * cp * cr / (cp + cr),
                "OP": op, "OR": orr, "OF1": 2 * op * orr / (op + orr)}
    assert m == pytest.approx({k: 100 * v for k, v in expected.items()})


def test_threshold_metrics_top_k_breaks_ties_towards_lower_index():
    scores = np.array([[0.5, 0.5, 0.5], [0.1, 0.9, 0.8]])
    m = threshold_metrics(scores, np.array([[1, 0, 0], [0, 1, 1]]), top_k=1)
    assert m["OP"] == pytest.approx(100.0)  # any other choice in row 0 is a false positive


def test_threshold_metrics_warns_and_skips_recall_of_classes_without_positive():
    targets = np.array([[1, 0, 0], [1, 0, -1], [0, 0, 1]])
    with pytest.warns(UserWarning, match=r"1 of 3 classes .* CR: 1"):
        m = threshold_metrics(SCORES_3x3, targets, threshold=0.5)
    # Class recalls: 1/2 and 1 for classes 0 and 2.
    assert m["CR"] == pytest.approx(100 * 0.75)


def test_threshold_metrics_option_errors():
    with pytest.raises(ConfigError, match="one of the two"):
        threshold_metrics(SCORES_3x3, TARGETS_3x3, threshold=0.5, top_k=1)
    with pytest.raises(ConfigError, match=r"top_k=4.*\[1, 3\]"):
        threshold_metrics(SCORES_3x3, TARGETS_3x3, top_k=4)
    with pytest.raises(ConfigError, match="finite"):
        threshold_metrics(SCORES_3x3, TARGETS_3x3, threshold=float("nan"))


# ----------------------------------------------------------------------------- pseudo-labels

PSEUDO = np.array([[1, 0, -1],
                   [1, 1, 0],
                   [0, -1, 1]], dtype=np.int8)
TRUTH = np.array([[1, 0, 1],
                  [0, 1, -1],
                  [0, 1, 1]])


def test_pseudo_label_quality_hand_computed():
    q = pseudo_label_quality(PSEUDO, TRUTH, class_names=["a", "b", "c"])
    assert q["class_names"] == ["a", "b", "c"]
    pc = q["per_class"]
    np.testing.assert_allclose(pc["pos_precision"], [0.5, 1.0, 1.0])
    np.testing.assert_allclose(pc["pos_recall"], [1.0, 0.5, 0.5])
    # Class 2: the only pseudo-negative sits on an unknown truth entry, so nothing to score.
    np.testing.assert_allclose(pc["neg_precision"], [1.0, 1.0, np.nan])
    np.testing.assert_allclose(pc["neg_recall"], [0.5, 1.0, np.nan])
    np.testing.assert_array_equal(pc["n_pseudo_pos"], [2, 1, 1])
    np.testing.assert_array_equal(pc["n_true_pos"], [1, 2, 2])
    np.testing.assert_array_equal(pc["n_evaluated"], [3, 3, 2])
    o = q["overall"]
    assert o["pos_precision"] == pytest.approx(3 / 4)
    assert o["pos_recall"] == pytest.approx(3 / 5)
    assert o["neg_precision"] == pytest.approx(1.0)
    assert o["neg_recall"] == pytest.approx(2 / 3)
    assert (o["n_pseudo_pos"], o["n_pseudo_pos_correct"], o["n_pseudo_neg"],
            o["n_pseudo_neg_correct"], o["n_true_pos"], o["n_true_neg"],
            o["n_evaluated"]) == (4, 3, 2, 2, 5, 3, 8)


def test_pseudo_label_quality_mask_restricts_the_entries():
    observed = np.array([[-1, 1, -1],
                         [0, -1, -1],
                         [-1, -1, 0]])
    q = pseudo_label_quality(PSEUDO, TRUTH, mask=observed == -1)
    o = q["overall"]
    # Evaluated: (0,0) pos->1, (0,2) none, (1,1) pos->1, (2,0) neg->0, (2,1) none on a positive.
    assert o["n_evaluated"] == 5
    assert (o["pos_precision"], o["pos_recall"]) == (1.0, 0.5)
    assert (o["neg_precision"], o["neg_recall"]) == (1.0, 1.0)
    assert q["class_names"] == [0, 1, 2]


def test_pseudo_label_quality_input_errors():
    with pytest.raises(DataError, match=r"mask.*shape \(3, 3\)"):
        pseudo_label_quality(PSEUDO, TRUTH, mask=np.ones((3, 2), dtype=bool))
    with pytest.raises(DataError, match="boolean"):
        pseudo_label_quality(PSEUDO, TRUTH, mask=np.full((3, 3), 0.5))
    with pytest.raises(DataError, match=r"truth.*expected shape \(3, 3\) matching pseudo"):
        pseudo_label_quality(PSEUDO, TRUTH[:2])
    with pytest.raises(DataError, match=r"class_names.*expected 3 class names"):
        pseudo_label_quality(PSEUDO, TRUTH, class_names=["a"])


def test_pseudo_quality_summary_is_flat_and_json_ready():
    labels = np.where(PSEUDO == -1, 0, PSEUDO).astype(np.int8)
    mask = PSEUDO != -1
    bare = pseudo_quality(labels, mask, None)
    assert bare == {"pl_used_fraction": pytest.approx(7 / 9),
                    "pl_positive_rate": pytest.approx(4 / 9)}
    full = pseudo_quality(labels, mask, TRUTH, scores=labels.astype(float))
    used = pseudo_label_quality(labels, TRUTH, mask=mask)["overall"]
    assert full["pl_used_pos_precision"] == pytest.approx(used["pos_precision"])
    assert full["pl_pos_recall"] == pytest.approx(
        pseudo_label_quality(labels, TRUTH)["overall"]["pos_recall"])
    assert 0 <= full["pl_score_map"] <= 100
    # a zero denominator is None (JSON has no NaN): no pseudo-negative at all
    ones = pseudo_quality(np.ones((3, 3), np.int8), np.ones((3, 3), bool), TRUTH)
    assert ones["pl_neg_precision"] is None and ones["pl_used_neg_precision"] is None


# ----------------------------------------------------------------------------- input validation

@pytest.mark.parametrize("fn", [average_precision, mean_average_precision, threshold_metrics])
def test_input_validation_errors(fn):
    good = np.array([[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(DataError, match=r"scores.*2-D .* got shape \(2,\)"):
        fn(np.array([0.1, 0.2]), np.array([1, 0]))
    with pytest.raises(DataError, match=r"targets.*expected shape \(2, 2\).* got shape \(2, 3\)"):
        fn(good, np.zeros((2, 3)))
    with pytest.raises(DataError, match=r"targets: value 2 at row 1, column 0; expected one of"):
        fn(good, np.array([[1, 0], [2, 0]]))
    with pytest.raises(DataError, match=r"targets: value 0.5 at row 0, column 1"):
        fn(good, np.array([[1, 0.5], [0, 0]]))
    with pytest.raises(DataError, match=r"scores: non-finite value nan at row 1, column 1"):
        fn(np.array([[0.1, 0.2], [0.3, np.nan]]), np.zeros((2, 2)))
    with pytest.raises(ValueError):  # DataError is a ValueError
        fn(np.array([["a", "b"]]), np.zeros((1, 2)))


def test_map_report_checks_class_names_length():
    with pytest.raises(DataError, match="expected 2 class names"):
        map_report(np.ones((2, 2)), np.eye(2), class_names=["only"])


def test_observed_recall_at_k_hand_computed():
    from vlml.metrics import observed_recall_at_k

    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7], [0.5, 0.5, 0.1]])
    observed = np.array([[-1, -1, 1], [1, -1, -1], [-1, 1, -1]])
    assert observed_recall_at_k(scores, observed, 1) == 0.0    # tie in row 2: class 0 first
    assert observed_recall_at_k(scores, observed, 2) == pytest.approx(200 / 3)
    assert observed_recall_at_k(scores, np.full((3, 3), -1), 2) is None
