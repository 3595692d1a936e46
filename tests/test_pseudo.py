"""Pseudo-labelers: VLPL (methods.md 3), per-class / top-k variants, CAP and MAT (methods.md 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import fbeta_score

from vlml.errors import ConfigError, DataError, UnknownNameError
from vlml.pseudo import (
    VLPL_DEFAULTS,
    CAPThreshold,
    ClassThreshold,
    FixedThreshold,
    MATThreshold,
    PseudoLabels,
    TopK,
    VLPLThreshold,
    combine_with_observed,
    create,
    entry,
    get,
    list_pseudo_labelers,
)
from vlml.pseudo.prior import fuse_prior


def hand_softmax(sims: np.ndarray, tau: float) -> np.ndarray:
    e = np.exp(np.asarray(sims, dtype=np.float64) / tau)
    return e / e.sum(axis=1, keepdims=True)


# ---- VLPL --------------------------------------------------------------------------------

def test_vlpl_labels_are_softmax_over_tau_thresholded_at_theta():
    sims = np.array([[0.31, 0.30, 0.22, 0.10],
                     [0.25, 0.24, 0.245, 0.05],
                     [0.20, 0.10, 0.05, 0.00]])
    out = VLPLThreshold(tau=0.03, theta=0.3).fit_transform(sims)
    s = hand_softmax(sims, 0.03)
    np.testing.assert_allclose(out.scores, s, rtol=1e-6)
    expected = np.where(s > 0.3, 1, -1)
    np.testing.assert_array_equal(out.labels, expected)
    # row 0: 0.31 and 0.30 are close -> two positives; row 2 one dominant class
    assert out.labels[0].tolist() == [1, 1, -1, -1]
    assert out.labels[2].tolist() == [1, -1, -1, -1]
    assert out.labels.dtype == np.int8 and out.mask is None


def test_vlpl_threshold_is_strict():
    # two equal similarities give s = [0.5, 0.5] exactly
    sims = np.array([[0.2, 0.2]])
    assert VLPLThreshold(tau=0.03, theta=0.5).transform(sims).labels.tolist() == [[-1, -1]]
    assert VLPLThreshold(tau=0.03, theta=0.49).transform(sims).labels.tolist() == [[1, 1]]
    # four equal similarities give 0.25 each: not above theta = 0.25
    four = np.full((1, 4), 0.3)
    assert (VLPLThreshold(tau=0.01, theta=0.25).transform(four).labels == -1).all()


@pytest.mark.parametrize("theta", [0.3, 0.25, 0.1, 0.01])
def test_vlpl_never_exceeds_floor_one_over_theta_positives(theta):
    rng = np.random.default_rng(0)
    sims = rng.uniform(-1, 1, size=(400, 312))
    # near-flat rows (huge tau) and near-ties are where the cap binds
    sims[:100] = 0.2 + rng.normal(0, 1e-4, size=(100, 312))
    for tau in (0.01, 0.03, 10.0):
        out = VLPLThreshold(tau=tau, theta=theta).transform(sims)
        assert out.labels.max(initial=-1) <= 1
        assert ((out.labels == 1).sum(axis=1) <= int(np.floor(1 / theta + 1e-9))).all()
    assert out.provenance["fitted"]["max_positives_per_image"] == int(np.floor(1 / theta + 1e-9))


def test_vlpl_theta_03_reaches_three_and_not_four_positives():
    three = np.array([[0.5, 0.5, 0.5, -0.5, -0.5]])
    out = VLPLThreshold(tau=0.03, theta=0.3).transform(three)
    assert out.labels.tolist() == [[1, 1, 1, -1, -1]]  # each s = 1/3 - tiny > 0.3
    four = np.array([[0.5, 0.5, 0.5, 0.5, -0.5]])
    assert (VLPLThreshold(tau=0.03, theta=0.3).transform(four).labels == -1).all()


def test_vlpl_tau_sharpens_the_softmax():
    sims = np.array([[0.30, 0.28, 0.20]])
    sharp = VLPLThreshold(tau=0.01, theta=0.3).transform(sims)
    flat = VLPLThreshold(tau=0.1, theta=0.3).transform(sims)
    # by hand: tau 0.01 -> e^30, e^28, e^20 -> s0 = 1 / (1 + e^-2 + e^-10) = 0.8807
    assert sharp.scores[0, 0] == pytest.approx(1 / (1 + np.exp(-2) + np.exp(-10)), rel=1e-6)
    assert sharp.labels.tolist() == [[1, -1, -1]]
    # tau 0.1 -> e^3, e^2.8, e^2 -> s = 0.457, 0.374, 0.168
    z = np.exp([3.0, 2.8, 2.0])
    np.testing.assert_allclose(flat.scores[0], z / z.sum(), rtol=1e-6)
    assert flat.labels.tolist() == [[1, 1, -1]]


def test_vlpl_delta_marks_the_lowest_share_of_each_image_negative():
    rng = np.random.default_rng(1)
    sims = rng.uniform(-0.2, 0.4, size=(50, 10))
    out = VLPLThreshold(tau=0.03, theta=0.3, delta=0.3).transform(sims)
    neg = out.labels == 0
    assert (neg.sum(axis=1) == 3).all()                       # floor(0.3 * 10) per image
    lowest = np.argsort(sims, axis=1)[:, :3]
    assert np.take_along_axis(neg, lowest, axis=1).all()      # and they are the 3 lowest
    assert out.provenance["fitted"]["negatives_per_image"] == 3
    none = VLPLThreshold(tau=0.03, theta=0.3).transform(sims)
    assert not (none.labels == 0).any()                       # default delta 0: positives only


def test_vlpl_delta_count_is_an_exact_floor_and_positive_wins():
    sims = np.linspace(-0.5, 0.5, 100)[None, :]
    out = VLPLThreshold(tau=0.03, theta=0.3, delta=0.29).transform(sims)
    assert int(0.29 * 100) == 28                               # the reference's count
    assert (out.labels == 0).sum() == 29                       # ours: floor(29.0)
    sims[0, -1] = 0.9                                          # a clear top class
    everything = VLPLThreshold(tau=0.03, theta=0.3, delta=1.0).transform(sims)
    assert everything.labels[0, -1] == 1                       # the top class stays positive
    assert (everything.labels[0, :-1] == 0).all()


def test_vlpl_negative_ties_go_to_the_lower_class_index():
    sims = np.array([[0.1, 0.0, 0.0, 0.0, 0.3]])
    out = VLPLThreshold(tau=0.03, theta=0.3, delta=0.4).transform(sims)
    assert out.labels.tolist() == [[-1, 0, 0, -1, 1]]


def test_vlpl_rejects_logits_and_bad_settings():
    with pytest.raises(DataError, match="cosine similarities"):
        VLPLThreshold(tau=0.03, theta=0.3).transform(np.array([[25.0, 31.0]]))
    with pytest.raises(DataError, match="non-finite"):
        VLPLThreshold(tau=0.03, theta=0.3).transform(np.array([[0.1, np.nan]]))
    for bad in ({"tau": 0.0, "theta": 0.3}, {"tau": 0.03, "theta": 1.0},
                {"tau": 0.03, "theta": 0.3, "delta": 10}):
        with pytest.raises(ConfigError):
            VLPLThreshold(**bad).fit()


def test_vlpl_paper_settings():
    assert VLPL_DEFAULTS == {"voc": {"tau": 0.03, "theta": 0.3},
                             "coco": {"tau": 0.01, "theta": 0.3},
                             "nus": {"tau": 0.03, "theta": 0.1},
                             "cub": {"tau": 0.03, "theta": 0.01}}
    coco = VLPLThreshold.from_paper("coco", delta=0.1)
    assert (coco.tau, coco.theta, coco.delta) == (0.01, 0.3, 0.1)
    with pytest.raises(UnknownNameError, match="'coco'"):
        VLPLThreshold.from_paper("cocoo")


def test_provenance_names_method_and_every_parameter():
    out = VLPLThreshold(tau=0.03, theta=0.3, delta=0.2).transform(np.array([[0.3, 0.1, 0.0]]))
    prov = out.provenance
    assert prov["method"] == "vlpl"
    assert prov["params"] == {"tau": 0.03, "theta": 0.3, "delta": 0.2}
    assert prov["n_images"] == 1 and prov["n_classes"] == 3
    assert prov["counts"] == {"positive": 1, "negative": 0, "none": 2}
    json.dumps(prov)  # plain JSON, ready to save next to a run
    cap = CAPThreshold(a=0.9, b=0.5).fit(None, np.eye(4, dtype=int)).transform(np.eye(4))
    assert cap.provenance["params"] == {"a": 0.9, "b": 0.5}
    assert cap.provenance["fitted"]["gamma"] == [0.25] * 4
    json.dumps(cap.provenance)


# ---- observed wins -----------------------------------------------------------------------

def test_combine_with_observed_keeps_pseudo_only_where_observed_is_unknown():
    observed = np.array([[1, -1, 0, -1], [-1, -1, -1, 0]], dtype=np.int8)
    pseudo = np.array([[0, 1, 1, -1], [1, 0, -1, 1]], dtype=np.int8)
    before = observed.copy(), pseudo.copy()
    out = combine_with_observed(observed, pseudo)
    assert out.tolist() == [[-1, 1, -1, -1], [1, 0, -1, -1]]
    assert out.dtype == np.int8
    np.testing.assert_array_equal(observed, before[0])        # nothing merged in place
    np.testing.assert_array_equal(pseudo, before[1])
    record = PseudoLabels(pseudo, provenance={"method": "hand"})
    np.testing.assert_array_equal(combine_with_observed(observed, record), out)
    with pytest.raises(DataError, match="shape"):
        combine_with_observed(observed, pseudo[:, :3])


def test_pseudo_labels_record_validates_its_arrays():
    labels = np.array([[1, 0, -1]], dtype=np.int8)
    with pytest.raises(DataError):
        PseudoLabels(np.array([[2, 0, -1]], dtype=np.int8), provenance={"method": "x"})
    with pytest.raises(DataError, match="bool"):
        PseudoLabels(labels, mask=np.ones((1, 3)), provenance={"method": "x"})
    with pytest.raises(DataError, match="shape"):
        PseudoLabels(labels, scores=np.ones((1, 2), np.float32), provenance={"method": "x"})
    with pytest.raises(DataError, match="method"):
        PseudoLabels(labels)


# ---- per-class threshold and top-k ------------------------------------------------------

def test_class_threshold_cosine_scalar_and_per_class_strict():
    sims = np.array([[0.30, 0.20, 0.25], [0.29, 0.35, 0.10]])
    out = ClassThreshold(0.25).fit_transform(sims)
    assert out.labels.tolist() == [[1, -1, -1], [1, 1, -1]]    # 0.25 is not > 0.25
    per_class = ClassThreshold([0.29, 0.3, 0.0]).transform(sims)
    assert per_class.labels.tolist() == [[1, -1, 1], [-1, 1, 1]]
    with pytest.raises(ConfigError, match="one per class"):
        ClassThreshold([0.1, 0.2]).transform(sims)
    with pytest.raises(ConfigError, match="score"):
        ClassThreshold(0.1, score="softmax").transform(sims)


def test_class_threshold_sigmoid_of_scaled_cosine():
    sims = np.array([[0.30, 0.20, 0.10]])
    out = ClassThreshold(0.5, score="sigmoid", scale=10.0, bias=-2.0).transform(sims)
    by_hand = 1 / (1 + np.exp(-(10 * sims - 2)))              # 0.731, 0.5, 0.269
    np.testing.assert_allclose(out.scores, by_hand, rtol=1e-6)
    assert out.labels.tolist() == [[1, -1, -1]]


def test_topk_gives_exactly_k_per_image_with_ties_to_lower_index():
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3]])
    out = TopK(2).fit_transform(scores)
    assert out.labels.tolist() == [[-1, 1, 1, -1], [1, 1, -1, -1]]
    assert out.provenance["params"] == {"k": 2}
    with pytest.raises(ConfigError, match="exceeds"):
        TopK(5).transform(scores)


# ---- CAP ---------------------------------------------------------------------------------

def cap_case():
    """10 labeled, 10 unlabeled images, 4 classes with gamma 0.3, 0, 0.3, 1."""
    labeled = np.zeros((10, 4), dtype=int)
    labeled[:3, 0] = 1
    labeled[4:7, 2] = 1
    labeled[:, 3] = 1
    rng = np.random.default_rng(3)
    scores = rng.permutation(np.linspace(0.05, 0.95, 10))[:, None].repeat(4, axis=1)
    scores[:, 2] = [0.9, 0.8, 0.7, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]   # tie at 3rd/4th place
    return labeled, scores


def test_cap_learns_gamma_and_rho():
    labeled, _ = cap_case()
    cap = CAPThreshold()
    assert cap.fit(None, labeled) is cap
    np.testing.assert_allclose(cap.gamma_, [0.3, 0.0, 0.3, 1.0])
    np.testing.assert_allclose(cap.rho_, [0.7, 1.0, 0.7, 0.0])


def test_cap_top_gamma_n_u_scores_are_positive():
    labeled, scores = cap_case()
    out = CAPThreshold().fit(None, labeled).transform(scores)
    top3 = np.argsort(-scores[:, 0])[:3]
    assert set(np.flatnonzero(out.labels[:, 0] == 1)) == set(top3)
    # ties with the 3rd largest are all positive (score >= tau, as the reference code)
    assert np.flatnonzero(out.labels[:, 2] == 1).tolist() == [0, 1, 2, 3]
    assert (out.labels[:, 3] == 1).all()                        # gamma 1: every image
    assert set(np.unique(out.labels)) <= {0, 1}                 # hard labels, no -1
    assert out.provenance["fitted"]["k"] == [3, 0, 3, 10]


def test_cap_class_absent_from_labeled_set_gets_no_positive():
    labeled, scores = cap_case()
    out = CAPThreshold().fit(None, labeled).transform(scores)
    assert (out.labels[:, 1] == 0).all()
    assert out.provenance["fitted"]["tau"][1] is None
    # the reference indexes int(0 * 10) - 1 = -1, i.e. the smallest score: all positive
    ref_tau = (-np.sort(-scores, axis=0))[int(0.0 * 10) - 1, 1]
    assert (scores[:, 1] >= ref_tau).all()


def test_cap_mask_counts():
    labeled, scores = cap_case()
    out = CAPThreshold(a=1.0, b=0.998).fit(None, labeled).transform(scores)
    k = out.provenance["fitted"]
    # class 0: floor(1 * 0.3 * 10) = 3 from the top, floor(0.998 * 0.7 * 10) = 6 from the bottom
    assert (k["k_mask_pos"][0], k["k_mask_neg"][0]) == (3, 6)
    assert out.mask[:, 0].sum() == 9
    assert not out.mask[np.argsort(-scores[:, 0])[3], 0]       # the 4th largest is ignored
    # class 1 (gamma 0): nothing through the top, floor(0.998 * 10) = 9 through the bottom
    assert out.mask[:, 1].sum() == 9 and not out.mask[np.argmax(scores[:, 1]), 1]
    # class 3 (gamma 1): all through the top, rho 0 adds nothing (no index -1)
    assert out.mask[:, 3].all() and k["k_mask_neg"][3] == 0
    half = CAPThreshold(a=0.5, b=0.5).fit(None, labeled).transform(scores)
    # class 0: floor(1.5) = 1 top, floor(3.5) = 3 bottom
    assert half.mask[:, 0].sum() == 4
    # class 2 with a tie at 3rd/4th and a = 1: both tied entries masked, 6 bottom -> 10
    assert out.mask[:, 2].sum() == 10


def test_cap_count_is_the_exact_floor():
    labeled = np.zeros((100, 1), dtype=int)
    labeled[:29] = 1
    scores = np.linspace(0, 1, 100)[:, None]
    out = CAPThreshold().fit(None, labeled).transform(scores)
    assert int(29 / 100 * 100) == 28                          # the reference's count
    assert (out.labels == 1).sum() == 29


def test_cap_errors():
    labeled, scores = cap_case()
    with pytest.raises(NotFittedError):
        CAPThreshold().transform(scores)
    with pytest.raises(DataError, match=r"value 2 .*expected 1 \(positive\), 0 "):
        CAPThreshold().fit(None, np.array([[1, 2]]))
    with pytest.raises(DataError, match="every entry of the 2 labeled images is unknown"):
        CAPThreshold().fit(None, np.full((2, 3), -1))
    with pytest.raises(ConfigError, match="b must lie"):
        CAPThreshold(b=1.5).fit(None, labeled)
    with pytest.raises(DataError, match="columns"):
        CAPThreshold().fit(None, labeled).transform(scores[:, :2])
    empty = CAPThreshold().fit(None, labeled).transform(np.zeros((0, 4)))
    assert empty.labels.shape == (0, 4) and empty.mask.shape == (0, 4)


def _cap_as_before(labeled, scores, a=1.0, b=0.998):
    """CAP before unknown targets were accepted (fully known 0/1 targets only), frozen here."""
    n_l, n_u = labeled.shape[0], scores.shape[0]
    count = (labeled == 1).sum(axis=0).astype(np.int64)
    pos, neg = count * n_u / n_l, (n_l - count) * n_u / n_l
    floor = lambda x: np.floor(np.asarray(x, dtype=np.float64) + 1e-9).astype(np.int64)  # noqa: E731
    desc = -np.sort(-scores, axis=0)

    def kth(sorted_scores, k):
        out = np.full(scores.shape[1], np.nan)
        ok = (k >= 1) & (k <= n_u)
        out[ok] = sorted_scores[k[ok] - 1, np.flatnonzero(ok)]
        return out

    with np.errstate(invalid="ignore"):
        labels = scores >= kth(desc, floor(pos))
        mask = (scores >= kth(desc, floor(a * pos))) | (scores <= kth(desc[::-1], floor(b * neg)))
    return count / n_l, labels.astype(np.int8), mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cap_with_fully_known_targets_is_exactly_as_before(seed):
    rng = np.random.default_rng(seed)
    labeled = (rng.random((int(rng.integers(3, 60)), 7)) < rng.uniform(0.02, 0.9, 7))
    scores = np.round(rng.random((int(rng.integers(1, 90)), 7)), 2)   # ties
    gamma, labels, mask = _cap_as_before(labeled.astype(int), scores, 0.7, 0.9)
    cap = CAPThreshold(a=0.7, b=0.9).fit(None, labeled.astype(np.int8))
    out = cap.transform(scores)
    np.testing.assert_array_equal(cap.gamma_, gamma)                 # bit for bit
    np.testing.assert_array_equal(out.labels, labels)
    np.testing.assert_array_equal(out.mask, mask)
    assert (cap.known_count_ == labeled.shape[0]).all()


def test_cap_priors_count_only_known_entries():
    # class 0: 1 positive of 3 known (the -1 is not a negative): gamma 1/3, not 1/4
    # class 1: 2 of 2 known; class 2: nothing known, so no prior
    labeled = np.array([[1, 1, -1], [-1, 1, -1], [0, -1, -1], [0, -1, -1]])
    scores = np.linspace(0.1, 0.6, 6)[:, None].repeat(3, axis=1)
    cap = CAPThreshold().fit(None, labeled)
    np.testing.assert_allclose(cap.gamma_[:2], [1 / 3, 1.0])
    assert np.isnan(cap.gamma_[2]) and np.isnan(cap.rho_[2])
    assert cap.known_count_.tolist() == [3, 2, 0] and cap.positive_count_.tolist() == [1, 2, 0]
    out = cap.transform(scores)
    assert out.labels[:, 0].tolist() == [0, 0, 0, 0, 1, 1]        # floor(6 / 3) = 2 top scores
    assert (out.labels[:, 1] == 1).all()
    assert (out.labels[:, 2] == 0).all() and not out.mask[:, 2].any()  # no prior: ignored
    fitted = out.provenance["fitted"]
    assert fitted["k"] == [2, 6, 0] and fitted["k_mask_neg"] == [3, 0, 0]
    assert fitted["n_known"] == [3, 2, 0] and fitted["gamma"][2] is None


def test_cap_with_unknowns_equals_cap_on_each_class_known_rows():
    rng = np.random.default_rng(4)
    labeled = (rng.random((40, 5)) < 0.3).astype(np.int8)
    labeled[rng.random((40, 5)) < 0.4] = -1
    scores = rng.random((50, 5))
    out = CAPThreshold().fit(None, labeled).transform(scores)
    for c in range(5):
        known = labeled[:, c] != -1
        alone = CAPThreshold().fit(None, labeled[known, c:c + 1]).transform(scores[:, c:c + 1])
        np.testing.assert_array_equal(out.labels[:, c], alone.labels[:, 0])
        np.testing.assert_array_equal(out.mask[:, c], alone.mask[:, 0])


# ---- MAT ---------------------------------------------------------------------------------

def test_mat_picks_the_known_best_threshold():
    s = np.array([0.9, 0.8, 0.35, 0.4, 0.1, 0.05])
    y = np.array([1, 1, 1, 0, 0, 0])
    # beta 0.5: t in (0.4, 0.8] gives P 1, R 2/3, F 0.909 (best); first grid point 0.41
    mat = MATThreshold(beta=0.5)
    assert mat.fit(s[:, None], y[:, None]) is mat
    assert mat.thresholds_[0] == pytest.approx(0.41)
    assert mat.best_score_[0] == pytest.approx(1.25 * (2 / 3) / (0.25 + 2 / 3))
    # beta 1: t in (0.1, 0.35] gives P 3/4, R 1, F1 0.857 (best); first grid point 0.11
    assert MATThreshold(beta=1.0).fit(s[:, None], y[:, None]).thresholds_[0] == pytest.approx(0.11)
    out = mat.transform(np.array([[0.41], [0.40], [0.95]]))
    assert out.labels[:, 0].tolist() == [1, 0, 1]             # score >= t


def test_mat_matches_sklearn_fbeta_brute_force():
    rng = np.random.default_rng(5)
    y = (rng.random((60, 6)) < 0.3).astype(int)
    y[0] = 1                                                  # every class has a positive
    s = np.clip(0.35 * y + rng.random((60, 6)) * 0.7, 0, 1)
    grid = np.arange(100) / 100
    mat = MATThreshold(beta=0.5).fit(s, y)
    # (G, C) F-beta from scikit-learn, one multi-label call per grid point
    f = np.array([fbeta_score(y, (s >= t).astype(int), beta=0.5, average=None, zero_division=0)
                  for t in grid])
    np.testing.assert_array_equal(mat.thresholds_, grid[np.argmax(f, axis=0)])
    np.testing.assert_allclose(mat.best_score_, f.max(axis=0))


def test_mat_class_without_positive_falls_back_to_no_positive():
    s = np.array([[0.9, 0.9], [0.2, 0.8], [0.1, 0.7]])
    y = np.array([[1, 0], [0, 0], [0, 0]])
    mat = MATThreshold().fit(s, y)
    assert mat.fallback_.tolist() == [False, True]
    assert mat.thresholds_[1] == np.inf
    out = mat.transform(s)
    assert (out.labels[:, 1] == 0).all()                      # the reference's t = 0: all 1
    assert out.provenance["fitted"]["thresholds"][1] is None
    assert out.provenance["fitted"]["fallback_classes"] == [1]


def test_mat_counts_only_known_entries():
    # the case of test_mat_picks_the_known_best_threshold plus two unknown entries; taken as
    # negatives, the -1 at 0.95 would be a false positive of every threshold and move t
    s = np.array([0.9, 0.8, 0.35, 0.4, 0.1, 0.05, 0.95, 0.6])
    y = np.array([1, 1, 1, 0, 0, 0, -1, -1])
    mat = MATThreshold(beta=0.5).fit(s[:, None], y[:, None])
    assert mat.thresholds_[0] == pytest.approx(0.41)
    assert mat.best_score_[0] == pytest.approx(1.25 * (2 / 3) / (0.25 + 2 / 3))
    as_negative = MATThreshold(beta=0.5).fit(s[:, None], np.maximum(y, 0)[:, None])
    assert as_negative.best_score_[0] < mat.best_score_[0]


def test_mat_with_unknowns_equals_mat_on_each_class_known_rows():
    rng = np.random.default_rng(6)
    y = (rng.random((60, 4)) < 0.4).astype(np.int8)
    s = np.clip(0.35 * y + rng.random((60, 4)) * 0.7, 0, 1)
    y[rng.random((60, 4)) < 0.3] = -1
    y[:, 3] = -1                                              # class 3: nothing known
    mat = MATThreshold().fit(s, y)
    for c in range(3):
        known = y[:, c] != -1
        alone = MATThreshold().fit(s[known, c:c + 1], y[known, c:c + 1])
        assert mat.thresholds_[c] == alone.thresholds_[0]
        assert mat.best_score_[c] == alone.best_score_[0]
    assert mat.fallback_.tolist() == [False, False, False, True]
    assert (mat.transform(s).labels[:, 3] == 0).all()


# ---- one class: a softmax over it is always 1 ---------------------------------------------

def test_vlpl_and_zero_shot_softmax_refuse_one_class():
    from vlml.pseudo.clip_scores import zero_shot_scores

    one = np.array([[0.3], [-0.2]])
    vlpl = VLPLThreshold(tau=0.03, theta=0.3)
    for call in (lambda: vlpl.fit(one), lambda: vlpl.transform(one),
                 lambda: vlpl.fit_transform(one)):
        with pytest.raises(DataError, match=r"softmax over one class is 1 for every image.*"
                                            r"'class_threshold'"):
            call()
    with pytest.raises(DataError, match=r"one class is 1 for every image.*mode 'cosine'"):
        zero_shot_scores(one, "softmax")
    np.testing.assert_array_equal(zero_shot_scores(one, "cosine"), one.astype(np.float32))
    # the per-class rule named in the message labels a one-class catalog
    assert ClassThreshold(0.25).fit_transform(one).labels.tolist() == [[1], [-1]]


# ---- registry and estimator contract -----------------------------------------------------

def test_registry_lists_all_and_suggests_close_names():
    assert list_pseudo_labelers() == ["cap", "class_threshold", "fixed", "mat", "topk", "vlpl"]
    assert get("vlpl") is VLPLThreshold and get("cap") is CAPThreshold
    with pytest.raises(UnknownNameError, match="Did you mean 'vlpl'"):
        get("vlp")
    assert create("topk", k=3).k == 3
    with pytest.raises(ConfigError, match="no parameter"):
        create("topk", kk=3)
    with pytest.raises(ConfigError, match="tau"):
        create("vlpl", theta=0.3)


@pytest.mark.parametrize("make, fit_args, x", [
    (lambda: VLPLThreshold(tau=0.03, theta=0.3), (), np.array([[0.3, 0.1]])),
    (lambda: ClassThreshold(0.2), (), np.array([[0.3, 0.1]])),
    (lambda: TopK(1), (), np.array([[0.3, 0.1]])),
    (lambda: CAPThreshold(), (None, np.array([[1, 0], [0, 0]])), np.array([[0.3, 0.1]])),
    (lambda: FixedThreshold(), (), np.array([[0.3, 0.1]])),
    (lambda: MATThreshold(), (np.array([[0.9, 0.1]]), np.array([[1, 0]])),
     np.array([[0.3, 0.1]])),
])
def test_sklearn_contract(make, fit_args, x):
    est = make()
    assert repr(clone(est).get_params()) == repr(est.get_params())
    assert not [k for k in vars(est) if k.endswith("_")]      # nothing learned in __init__
    assert est.fit(*fit_args) is est
    state = {k: v for k, v in vars(est).items()}
    out = est.transform(x)
    assert isinstance(out, PseudoLabels) and out.labels.shape == x.shape
    assert vars(est).keys() == state.keys()                   # transform learns nothing


def _fit_inputs(name):
    """(labeller, fit scores, fit targets, scores to label) chosen from the entry's flags."""
    rng = np.random.default_rng(0)
    e = entry(name)
    targets = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    scores = np.clip(rng.uniform(-0.2, 0.6, (4, 3)), -1, 1)
    params = {"vlpl": {"tau": 0.03, "theta": 0.3}, "class_threshold": {"threshold": 0.2}}
    return (create(name, **params.get(name, {})), scores,
            targets if e.needs_targets else None, scores)


@pytest.mark.parametrize("name", list_pseudo_labelers())
def test_every_labeller_fits_scores_and_optional_targets(name):
    """fit(scores, targets=None) -> self; fit_transform == fit(...).transform(...)."""
    labeller, scores, targets, x = _fit_inputs(name)
    assert labeller.fit(scores, targets) is labeller
    a = labeller.transform(x)
    b = clone(labeller).fit_transform(scores, targets)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.provenance == b.provenance
    if not entry(name).needs_targets:   # targets accepted and ignored
        c = clone(labeller).fit(scores, np.ones_like(scores, dtype=int)).transform(x)
        np.testing.assert_array_equal(a.labels, c.labels)
    if not entry(name).needs_labeled_scores:   # scores are optional at fit
        d = clone(labeller).fit(None, targets).transform(x)
        np.testing.assert_array_equal(a.labels, d.labels)
    clone(labeller).check_params()


def test_registry_flags_say_what_fit_needs():
    assert list_pseudo_labelers(needs_targets=True) == ["cap", "mat"]
    assert list_pseudo_labelers(needs_labeled_scores=True) == ["mat"]
    assert list_pseudo_labelers(needs_similarities=True) == ["class_threshold", "vlpl"]
    assert list_pseudo_labelers(needs_targets=False, needs_similarities=False) == ["fixed", "topk"]
    with pytest.raises(ConfigError, match="needs_targets"):
        list_pseudo_labelers(needs_target=True)
    with pytest.raises(UnknownNameError, match="Did you mean 'cap'"):
        entry("capp")


def test_labellers_that_need_targets_or_scores_say_so():
    with pytest.raises(DataError, match="targets"):
        CAPThreshold().fit(np.zeros((2, 2)))
    with pytest.raises(DataError, match="no targets"):
        MATThreshold().fit(np.zeros((2, 2)))
    with pytest.raises(DataError, match="no scores"):
        MATThreshold().fit(None, np.zeros((2, 2), dtype=int))
    # CAP reads only the targets' class frequencies: the scores passed to fit change nothing
    labeled, scores = cap_case()
    a = CAPThreshold().fit(None, labeled).transform(scores)
    b = CAPThreshold().fit(scores[:, ::-1], labeled).transform(scores)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_fixed_threshold_gives_hard_labels_at_score_ge_t():
    scores = np.array([[0.5, 0.49, 0.9], [0.1, 0.5, 0.0]])
    out = FixedThreshold().fit_transform(scores)              # default threshold 0.5
    assert out.labels.tolist() == [[1, 0, 1], [0, 1, 0]] and out.mask is None
    np.testing.assert_array_equal(out.scores, scores.astype(np.float32))
    per_class = create("fixed", threshold=[0.6, 0.4, 0.0]).transform(scores)
    assert per_class.labels.tolist() == [[0, 1, 1], [0, 1, 1]]
    assert out.provenance["fitted"]["thresholds"] == [0.5] * 3
    with pytest.raises(ConfigError, match="one per class"):
        FixedThreshold([0.1, 0.2]).transform(scores)
    with pytest.raises(ConfigError, match="finite"):
        create("fixed", threshold=float("nan")).check_params()


# ---- zero-shot prior fused into a teacher's scores (CBSA) ----------------------------------------
def test_fuse_prior_matches_the_formula():
    scores = np.array([[0.8, 0.3, 0.05]])
    prior = np.array([[0.6, 0.3, 0.1]])
    expected = 1 / (1 + np.exp(-(np.log(scores / (1 - scores)) + 0.5 * np.log(3 * prior))))
    np.testing.assert_allclose(fuse_prior(scores, prior, 0.5), expected, rtol=1e-6)


def test_fuse_prior_leaves_scores_alone_without_information():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.01, 0.99, (5, 4))
    prior = rng.dirichlet(np.ones(4), 5)
    np.testing.assert_allclose(fuse_prior(scores, prior, 0.0), scores, rtol=1e-6)
    np.testing.assert_allclose(fuse_prior(scores, np.full((5, 4), 0.25), 2.0), scores, rtol=1e-6)


def test_fuse_prior_reranks_by_the_prior():
    scores = np.array([[0.6], [0.5]])            # the teacher ranks image 0 first for the class
    prior = np.array([[0.1, 0.9], [0.9, 0.1]])   # the zero-shot scores favour image 1
    fused = fuse_prior(np.hstack([scores, 1 - scores]), prior, 1.0)
    assert fused[1, 0] > fused[0, 0]
    assert np.all((fused > 0) & (fused < 1)) and fused.dtype == np.float32


def test_fuse_prior_rejects_bad_input():
    with pytest.raises(ConfigError, match=r"\(2, 3\).*\(2, 2\)"):
        fuse_prior(np.full((2, 2), 0.5), np.full((2, 3), 1 / 3), 1.0)
    with pytest.raises(ConfigError, match=">= 0"):
        fuse_prior(np.full((2, 2), 0.5), np.full((2, 2), 0.5), -1.0)
