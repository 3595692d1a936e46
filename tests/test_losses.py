"""Registry and stateless losses, each checked against methods.md section 2 computed in numpy."""

import math

import numpy as np
import pytest
import torch

from vlml import losses
from vlml.errors import ConfigError, DataError, UnknownNameError

EPS = 1e-5

# Row 2 is all unknown; 20 and -20 saturate the sigmoid so the 1e-5 inside the log matters.
X = np.array([[2.0, -1.0, 0.5, 20.0],
              [0.0, 3.0, -2.0, -20.0],
              [1.5, -0.5, 0.3, -3.0]])
O = np.array([[1, -1, 0, -1],
              [-1, 1, -1, 0],
              [-1, -1, -1, -1]], dtype=np.int8)


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def nl(x):
    return -math.log(x + EPS)


def H(p):
    return p * nl(p) + (1 - p) * nl(1 - p)


def reference(entry_loss, x=X, o=O):
    """Mean over all B*C entries of entry_loss(p, o) for scalar p and label o."""
    vals = [entry_loss(sig(x[i, j]), int(o[i, j]))
            for i in range(x.shape[0]) for j in range(x.shape[1])]
    return sum(vals) / len(vals)


def run(name, x=X, o=O, **params):
    logits = torch.tensor(x, dtype=torch.float64)
    return losses.get(name)(logits, torch.tensor(o, dtype=torch.int8), **params).item()


def test_registry_lists_every_loss():
    # every loss of methods.md section 2 and 5.5 (a new loss needs no edit here)
    expected = {"bce", "an", "an_ls", "wan", "epr", "epr_l1", "role", "em", "em_apl", "ll_r",
                "ll_ct", "ll_cp", "focal", "asl", "masked_asl", "entmin", "vlpl"}
    assert expected <= set(losses.list_losses())
    for name in expected:
        entry = losses.get(name)
        assert entry.name == name and entry.description
        assert entry.has_state == (name in {"role", "em_apl", "ll_cp"})
        assert (entry.state is not None) == entry.has_state
        assert getattr(losses, name) is entry.fn


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownNameError, match="Did you mean 'vlpl'"):
        losses.get("vlp")
    with pytest.raises(UnknownNameError, match="unknown loss 'nope'"):
        losses.get("nope")


def test_per_dataset_defaults():
    em = losses.get("em")
    assert [em.params(d)["alpha"] for d in ("voc2007", "coco", "nuswide", "cub")] == \
        [0.2, 0.1, 0.1, 0.01]
    apl = losses.get("em_apl").params("nuswide")
    assert (apl["beta"], apl["warmup_epoch"], apl["theta"]) == (0.2, 4, 0.9)
    assert losses.get("epr").params("cub")["k"] == 31.4
    assert losses.get("role").params("voc2012")["k"] == 1.5
    v = losses.get("vlpl").params("coco")
    assert (v["alpha"], v["beta"], v["eps"], v["gamma"]) == (0.1, 0.7, 0.9, 0.0)
    assert "alpha" not in em.params("my_toy_set")


def test_dataset_default_is_used_and_overridable():
    voc = reference(lambda p, o: nl(p) if o == 1 else nl(1 - p) if o == 0 else -0.2 * H(p))
    assert run("em", dataset="voc2007") == pytest.approx(voc, rel=1e-12)
    assert run("em", dataset="voc2007", alpha=0.5) == pytest.approx(
        reference(lambda p, o: nl(p) if o == 1 else nl(1 - p) if o == 0 else -0.5 * H(p)))


def test_missing_and_unknown_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="needs alpha=.*voc"):
        run("em")
    with pytest.raises(ConfigError, match="Did you mean 'alpha'"):
        run("em", alpha=0.1, alph=0.2)
    with pytest.raises(ConfigError, match="unknown"):
        run("asl", unknown="maybe")


@pytest.mark.parametrize("observed, match", [
    (np.array([[1, 2, 0, 0]] * 3), "value 2 at row 0, column 1"),
    (np.zeros((2, 4), dtype=np.int8), r"shape \(2, 4\) does not match"),
    (np.zeros((3, 4), dtype=np.float32), "integer"),
])
def test_bad_observed_is_a_data_error(observed, match):
    with pytest.raises(DataError, match=match):
        losses.get("an")(torch.zeros(3, 4), torch.as_tensor(observed))


def test_nl_keeps_the_epsilon():
    assert losses.nl(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(
        -math.log(1e-5))


def test_bce_full_labels_and_unknowns():
    full = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.int8)
    assert run("bce", o=full) == pytest.approx(
        reference(lambda p, o: nl(p) if o == 1 else nl(1 - p), o=full), rel=1e-12)
    with pytest.raises(DataError, match="8 unknown"):
        run("bce")
    assert run("bce", unknown="ignore") == pytest.approx(
        reference(lambda p, o: nl(p) if o == 1 else nl(1 - p) if o == 0 else 0.0), rel=1e-12)


def test_an():
    expected = reference(lambda p, o: nl(p) if o == 1 else nl(1 - p))
    assert run("an") == pytest.approx(expected, rel=1e-12)
    # entry (0, 3): logit 20, unknown -> -log(1 - sigmoid(20) + 1e-5), about 11.5, not 20
    assert nl(1 - sig(20.0)) == pytest.approx(11.5127, abs=1e-3)


def test_an_ls():
    expected = reference(lambda p, o: 0.9 * nl(p) + 0.1 * nl(1 - p) if o == 1
                         else 0.9 * nl(1 - p) + 0.1 * nl(p))
    assert run("an_ls") == pytest.approx(expected, rel=1e-12)


def test_wan():
    expected = reference(lambda p, o: nl(p) if o == 1 else nl(1 - p) if o == 0
                         else nl(1 - p) / 3)
    assert run("wan") == pytest.approx(expected, rel=1e-12)


def test_focal():
    expected = reference(lambda p, o: (1 - p) ** 2 * nl(p) if o == 1 else p**2 * nl(1 - p))
    assert run("focal") == pytest.approx(expected, rel=1e-12)


def test_asl_unknown_as_negative_and_masked():
    def entry(p, o, unknown_negative):
        pm = max(p - 0.05, 0.0)
        if o == 1:
            return nl(p)  # gamma+ = 0
        if o == 0 or unknown_negative:
            return pm**4 * nl(1 - pm)
        return 0.0
    assert run("asl") == pytest.approx(reference(lambda p, o: entry(p, o, True)), rel=1e-12)
    assert run("asl", unknown="ignore") == pytest.approx(
        reference(lambda p, o: entry(p, o, False)), rel=1e-12)


def test_masked_asl_matches_hand_computation():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    targets = torch.tensor([[1, 0], [0, 1]], dtype=torch.int8)
    mask = torch.tensor([[True, False], [True, True]])
    p_neg = max(sig(-1.0) - 0.05, 0.0)
    expected = nl(sig(0.0)) + p_neg ** 4 * nl(1 - p_neg) + nl(sig(0.5))  # entry (0, 1) masked
    got = losses.masked_asl(logits, targets, mask, reduction="sum", gamma_pos=0, gamma_neg=4,
                            clip=0.05)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    mean = losses.masked_asl(logits, targets, mask, reduction="mean")
    assert mean.item() == pytest.approx(expected / 4, rel=1e-5)
    unmasked = losses.masked_asl(logits, targets, None)
    p01 = sig(2.0) - 0.05
    assert unmasked.item() == pytest.approx(expected + p01 ** 4 * nl(1 - p01), rel=1e-5)
    # through the registry: the same defaults (sum, gamma- 4, margin 0.05) and the mask keyword
    assert losses.get("masked_asl")(logits, targets, mask=mask).item() == pytest.approx(
        expected, rel=1e-5)


def test_masked_asl_with_bce_params_is_masked_bce():
    o = np.array([[1, 0, -1, 1]], dtype=np.int8)
    x = np.array([[0.3, -0.7, 2.0, -1.0]])
    got = losses.masked_asl(torch.tensor(x), torch.tensor(o), reduction="mean",
                            **losses.BCE_PARAMS).item()
    assert got == pytest.approx(run("bce", x=x, o=o, unknown="ignore"), rel=1e-5)
    with pytest.raises(ConfigError, match="reduction"):
        losses.masked_asl(torch.tensor(x), torch.tensor(o), reduction="max")


def test_asl_margin_zeroes_easy_negatives():
    # p = sigmoid(-4) = 0.018 < 0.05: the shifted probability is 0, so is the loss
    assert run("asl", x=np.full((1, 2), -4.0), o=np.array([[0, -1]], dtype=np.int8)) == 0.0


def test_entmin():
    expected = reference(lambda p, o: nl(p) if o == 1 else nl(1 - p) if o == 0 else H(p))
    assert run("entmin") == pytest.approx(expected, rel=1e-12)


def test_em():
    expected = reference(lambda p, o: nl(p) if o == 1 else nl(1 - p) if o == 0
                         else -0.1 * H(p))
    assert run("em", alpha=0.1) == pytest.approx(expected, rel=1e-12)


def test_em_is_negative_by_design():
    unknown = np.full((2, 3), -1, dtype=np.int8)
    value = run("em", x=np.zeros((2, 3)), o=unknown, alpha=0.2)
    assert value == pytest.approx(-0.2 * H(0.5), rel=1e-12)
    assert value < 0


@pytest.mark.parametrize("name, norm", [("epr", 2), ("epr_l1", 1)])
def test_epr(name, norm):
    observed = reference(lambda p, o: nl(p) if o == 1 else nl(1 - p) if o == 0 else 0.0)
    mean_pos = np.mean([sum(sig(v) for v in row) for row in X])
    reg = abs(mean_pos - 1.5) ** norm / 4**2
    assert run(name, k=1.5) == pytest.approx(observed + reg, rel=1e-12)


def vlpl_entry(p, o, q, alpha, beta, eps, gamma):
    if o == 1:
        return nl(p)
    if o == 0:
        return nl(1 - p)
    if q == 1:
        return beta * (eps * nl(p) + (1 - eps) * nl(1 - p))
    if q == 0:
        return gamma * (eps * nl(1 - p) + (1 - eps) * nl(p))
    return -alpha * H(p)


# pseudo-labels on observed entries (0,0)=1 -> 0, (0,2)=0 -> 1, (1,1)=1 -> 0 must be overruled
PSEUDO = np.array([[0, 1, 1, 0],
                   [1, 0, 0, -1],
                   [-1, 1, 0, -1]], dtype=np.int8)


def vlpl_reference(alpha, beta, eps, gamma):
    vals = [vlpl_entry(sig(X[i, j]), int(O[i, j]), int(PSEUDO[i, j]), alpha, beta, eps, gamma)
            for i in range(3) for j in range(4)]
    return sum(vals) / len(vals)


def test_vlpl_default_ignores_pseudo_negatives():
    got = run("vlpl", pseudo=torch.tensor(PSEUDO), dataset="voc2007")
    assert got == pytest.approx(vlpl_reference(0.2, 0.7, 0.9, 0.0), rel=1e-12)


def test_vlpl_pseudo_negative_term_and_observed_wins():
    got = run("vlpl", pseudo=torch.tensor(PSEUDO), alpha=0.1, beta=0.5, eps=0.8, gamma=0.3)
    assert got == pytest.approx(vlpl_reference(0.1, 0.5, 0.8, 0.3), rel=1e-12)
    # the observed labels alone decide when the pseudo-labels contradict them everywhere
    contradicting = np.where(O == 1, 0, np.where(O == 0, 1, -1)).astype(np.int8)
    assert run("vlpl", pseudo=torch.tensor(contradicting), alpha=0.1) == pytest.approx(
        run("em", alpha=0.1), rel=1e-12)


def test_vlpl_pseudo_shape_checked():
    with pytest.raises(DataError, match="pseudo"):
        run("vlpl", pseudo=torch.zeros(2, 4, dtype=torch.int8), alpha=0.1)


def test_all_unknown_row_counts_in_the_mean():
    # a batch with only the all-unknown row: AN treats every entry as negative
    row = X[2:3]
    expected = np.mean([nl(1 - sig(v)) for v in row[0]])
    assert run("an", x=row, o=O[2:3]) == pytest.approx(expected, rel=1e-12)
    assert run("epr", x=row, o=O[2:3], k=1.0) == pytest.approx(
        (sum(sig(v) for v in row[0]) - 1.0) ** 2 / 16, rel=1e-12)


@pytest.mark.parametrize("name", ["bce", "an", "an_ls", "wan", "epr", "epr_l1", "em", "focal",
                                  "asl", "entmin", "vlpl", "ll_r", "ll_ct"])
def test_gradients_flow_float32(name):
    logits = torch.tensor(X, dtype=torch.float32, requires_grad=True)
    observed = torch.tensor(O)
    params = {"dataset": "voc2007"}
    if name == "bce":
        params["unknown"] = "ignore"
    if name == "vlpl":
        params["pseudo"] = torch.tensor(PSEUDO)
    if name.startswith("ll_"):
        params["epoch"] = 3
    value = losses.get(name)(logits, observed, **params)
    assert value.dtype == torch.float32 and value.ndim == 0
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_focusing_weights_carry_no_gradient():
    # one positive and one negative entry; d/dx of w * nl(p) with w held constant
    x = np.array([[0.7, 1.2]])
    o = np.array([[1, 0]], dtype=np.int8)
    logits = torch.tensor(x, requires_grad=True)
    losses.focal(logits, torch.tensor(o), gamma=2.0).backward()
    p0, p1 = sig(0.7), sig(1.2)
    d0 = (1 - p0) ** 2 * (-1 / (p0 + EPS)) * p0 * (1 - p0)
    d1 = p1**2 * (1 / (1 - p1 + EPS)) * p1 * (1 - p1)
    np.testing.assert_allclose(logits.grad.numpy(), [[d0 / 2, d1 / 2]], rtol=1e-10)

    logits = torch.tensor(x, requires_grad=True)
    losses.asl(logits, torch.tensor(o)).backward()
    pm = p1 - 0.05
    d1 = pm**4 * (1 / (1 - pm + EPS)) * p1 * (1 - p1)
    d0 = (-1 / (p0 + EPS)) * p0 * (1 - p0)
    np.testing.assert_allclose(logits.grad.numpy(), [[d0 / 2, d1 / 2]], rtol=1e-10)
