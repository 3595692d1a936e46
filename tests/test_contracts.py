"""Registry-driven contract tests (timm's way): everything a user chooses by name is checked
from its registry record alone, so registering a loss, a pseudo-labeller or a dataset reader is
enough to have it tested (a reader also needs its fixture in tests/fixtures.py, or this fails).

- losses: a finite scalar and finite gradients on random batches (with all-unknown rows), and
  the record's `unknown` flag holds (zero gradient on unknown entries where it says "ignored",
  a label-free gradient there where it says "label_free", some gradient where it says "used",
  a `DataError` where it says "refused");
- pseudo-labellers: scikit-learn's estimator invariants;
- dataset readers: a tiny fixture in the real on-disk format loads through `vlml.data.load`;
- every registry lists its records without importing torch.
"""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import vlml.data
from fixtures import DATASET_FIXTURES
from vlml import losses, pseudo
from vlml.errors import DataError, VlmlError
from vlml.losses.registry import LOSSES, LossEntry, make_entry
from vlml.types import Catalog, validate_labels

B, C = 6, 8
DATASET = "voc2007"  # supplies the published per-dataset parameters a loss needs


# ---- losses ----------------------------------------------------------------------------------
def random_observed(seed: int, unknown_rows: tuple[int, ...] = (0,), full: bool = False
                    ) -> torch.Tensor:
    """(B, C) int8 in {1, 0, -1} (or {1, 0} when `full`), rows `unknown_rows` all -1."""
    rng = np.random.default_rng(seed)
    obs = rng.choice([1, 0] if full else [1, 0, -1], size=(B, C)).astype(np.int8)
    if not full:
        obs[list(unknown_rows)] = -1
        obs[-1, 0] = 1  # at least one known positive
    return torch.from_numpy(obs)


def random_logits(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (3.0 * torch.randn(B, C, generator=gen, dtype=torch.float64)).requires_grad_()


def batch_inputs(entry: LossEntry, observed: torch.Tensor, seed: int) -> dict[str, Any]:
    """The keyword arguments a training loop passes with a batch, built from the record alone:
    `dataset` where the loss has published per-dataset values, and its `batch_inputs`."""
    kwargs: dict[str, Any] = {}
    if entry.dataset_defaults:
        kwargs["dataset"] = DATASET
    if "pseudo" in entry.batch_inputs:
        rng = np.random.default_rng(seed + 1)
        kwargs["pseudo"] = torch.from_numpy(rng.choice([1, 0, -1], size=(B, C)).astype(np.int8))
    if "epoch" in entry.batch_inputs:
        kwargs["epoch"] = 3  # past the first epoch: the epoch-dependent branches are live
    if "indices" in entry.batch_inputs:
        kwargs["indices"] = torch.arange(B)
    if "state" in entry.batch_inputs:
        extra = {"seed": seed} if "seed" in inspect.signature(entry.state).parameters else {}
        kwargs["state"] = entry.make_state(observed, dataset=kwargs.get("dataset"), **extra)
    return kwargs


def loss_and_grad(entry: LossEntry, observed: torch.Tensor, seed: int,
                  others: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of random logits (every entry but (1, 1) set to `others` if given) and its
    gradient, checked to be a finite scalar / finite."""
    logits = random_logits(seed)
    if others is not None:
        with torch.no_grad():
            keep = logits[1, 1].item()
            logits.fill_(others)
            logits[1, 1] = keep
    value = entry(logits, observed, **batch_inputs(entry, observed, seed))
    assert isinstance(value, torch.Tensor) and value.ndim == 0, \
        f"{entry.name}: expected a scalar tensor, got {value!r}"
    assert torch.isfinite(value), f"{entry.name}: loss {value.item()} is not finite"
    value.backward()
    assert logits.grad is not None and logits.grad.shape == (B, C), \
        f"{entry.name}: no gradient of shape {(B, C)} on the logits"
    assert torch.isfinite(logits.grad).all(), f"{entry.name}: non-finite gradient"
    return value.detach(), logits.grad


def check_loss(entry: LossEntry, seed: int = 0) -> None:
    """Every check a registered loss must pass; an `AssertionError` names the first failure."""
    if entry.unknown == "refused":
        try:
            entry(random_logits(seed), random_observed(seed),
                  **batch_inputs(entry, random_observed(seed), seed))
        except DataError:
            pass
        else:
            raise AssertionError(f"{entry.name}: flagged unknown='refused' but accepted -1")
        loss_and_grad(entry, random_observed(seed, full=True), seed)
        return
    observed = random_observed(seed, unknown_rows=(0, 2))
    _, grad = loss_and_grad(entry, observed, seed)
    unknown = observed == -1
    if entry.unknown == "ignored":
        bad = grad[unknown].abs().max().item()
        assert bad == 0.0, f"{entry.name}: flagged unknown='ignored' but the gradient on " \
                           f"unknown entries reaches {bad:.3g}"
    elif entry.unknown == "label_free":
        assert grad[unknown].abs().max() > 0, \
            f"{entry.name}: flagged unknown='label_free' but unknown entries get no gradient " \
            "(that is 'ignored')"
        # the term that touches them reads no labels: the same gradient with every label unknown
        all_unknown = torch.full_like(observed, -1)
        _, free = loss_and_grad(entry, all_unknown, seed)
        torch.testing.assert_close(grad[unknown], free[unknown], rtol=1e-9, atol=1e-12,
                                   msg=f"{entry.name}: flagged unknown='label_free' but the "
                                       "gradient on unknown entries depends on the labels")
        # ... and it is a batch term, not a per-entry one: entry (1, 1)'s gradient moves with
        # the other entries' logits (all very negative, then all very positive)
        _, low = loss_and_grad(entry, all_unknown, seed, others=-8.0)
        _, high = loss_and_grad(entry, all_unknown, seed, others=8.0)
        assert low[1, 1] != high[1, 1], \
            f"{entry.name}: flagged unknown='label_free' but unknown entries have a per-entry " \
            "term of their own (that is 'used')"
    else:
        assert grad[unknown].abs().max() > 0, \
            f"{entry.name}: flagged unknown='used' but unknown entries get no gradient"
    # an all-unknown batch (a batch of unlabeled images) is still a finite loss
    loss_and_grad(entry, torch.full_like(observed, -1), seed + 7)


def check_all_losses() -> list[str]:
    """Run `check_loss` on every registered loss; the names checked."""
    names = losses.list_losses()
    for name in names:
        check_loss(losses.get(name))
    return names


@pytest.mark.parametrize("name", losses.list_losses())
def test_loss_contract(name):
    check_loss(losses.get(name))


def test_unknown_flag_is_set_truthfully_for_the_seed_losses():
    """methods.md section 2: what each loss does with unknown entries."""
    expected = {"bce": "refused", "masked_asl": "ignored", "epr": "label_free",
                "epr_l1": "label_free"}
    for name in losses.list_losses():
        assert losses.get(name).unknown == expected.get(name, "used"), name
    assert [n for n in losses.list_losses() if losses.get(n).ignores_unknown] == ["masked_asl"]


def _l2_known(logits, observed, *, weight=1.0):
    """A throwaway loss: squared error on known entries only (unknown entries give 0)."""
    known = observed != -1
    target = (observed == 1).to(logits.dtype)
    return weight * torch.where(known, (torch.sigmoid(logits) - target) ** 2, 0.0).mean()


def _l2_all(logits, observed, *, weight=1.0):
    """Broken if flagged "ignored": unknown entries count as negatives."""
    return weight * (torch.sigmoid(logits) - (observed == 1).to(logits.dtype)).pow(2).mean()


def _nan(logits, observed):
    return (logits * float("nan")).mean()


def test_a_loss_registered_at_run_time_is_listed_and_checked():
    entry = make_entry("tmp_l2", _l2_known, "throwaway", unknown="ignored",
                       defaults={"weight": 2.0})
    with LOSSES.registered("tmp_l2", entry):
        assert "tmp_l2" in losses.list_losses()
        assert "tmp_l2" in check_all_losses()
        assert losses.tmp_l2 is _l2_known
    assert "tmp_l2" not in losses.list_losses()


@pytest.mark.parametrize("fn, unknown, match", [
    (_l2_all, "ignored", "gradient on unknown entries"),
    (_l2_known, "used", "get no gradient"),
    (_l2_known, "label_free", "that is 'ignored'"),
    (_l2_all, "label_free", "that is 'used'"),
    (_l2_known, "refused", "accepted -1"),
    (_nan, "used", "not finite"),
])
def test_a_broken_loss_fails_the_checks(fn, unknown, match):
    with LOSSES.registered("tmp_broken", make_entry("tmp_broken", fn, "broken", unknown=unknown)):
        with pytest.raises(AssertionError, match=match):
            check_loss(losses.get("tmp_broken"))
    assert "tmp_broken" not in LOSSES


def test_registry_unregister():
    entry = make_entry("tmp_x", _l2_known, "throwaway", unknown="ignored")
    LOSSES.register("tmp_x", entry)
    assert LOSSES.unregister("tmp_x") is entry and "tmp_x" not in LOSSES
    with pytest.raises(KeyError):
        LOSSES.unregister("tmp_x")


# ---- pseudo-labellers ------------------------------------------------------------------------
# Settings for the labellers whose constructor has required arguments (the paper's VOC setting).
REQUIRED_PARAMS = {"vlpl": {"tau": 0.03, "theta": 0.3}, "class_threshold": {"threshold": 0.2}}
N_FIT, N_NEW = 40, 30


def pseudo_data(entry: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores to fit on (N_FIT, C), their 0/1 targets, new scores (N_NEW, C)): cosine
    similarities for labellers that need them, probabilities otherwise; the fit scores are
    correlated with the targets, as a teacher's scores of labeled images are."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((N_FIT, C)) < 0.3).astype(np.int8)
    targets[0, :] = 1  # every class has a positive and a negative
    targets[1, :] = 0
    fit = np.clip(0.6 * targets + 0.4 * rng.random((N_FIT, C)), 0.0, 1.0)
    new = rng.random((N_NEW, C))
    if entry.needs_similarities:
        fit, new = 0.2 * fit, 0.2 * new + 0.1  # CLIP-like cosines
    return fit, targets, new


def make_labeler(name: str) -> Any:
    cls = pseudo.get(name)
    params = REQUIRED_PARAMS.get(name, {})
    required = [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                if p.default is inspect.Parameter.empty and p.name not in params]
    assert not required, (f"{name}: required constructor argument(s) {required}; give them "
                          "defaults or add a setting to REQUIRED_PARAMS")
    return cls(**params)


def fitted_state(est: Any) -> dict[str, Any]:
    return copy.deepcopy(vars(est))


def assert_same_state(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: attributes changed {set(a) ^ set(b)}"
    for k in a:
        np.testing.assert_equal(a[k], b[k], err_msg=f"{what}: attribute {k!r} changed")


def assert_same_output(a: Any, b: Any, what: str) -> None:
    np.testing.assert_array_equal(a.labels, b.labels, err_msg=f"{what}: labels differ")
    assert (a.mask is None) == (b.mask is None), f"{what}: masks differ"
    if a.mask is not None:
        np.testing.assert_array_equal(a.mask, b.mask, err_msg=f"{what}: masks differ")


@pytest.mark.parametrize("name", pseudo.list_pseudo_labelers())
def test_pseudo_labeler_contract(name):
    entry = pseudo.entry(name)
    fit_scores, targets, new = pseudo_data(entry)
    given_targets = targets if entry.needs_targets else None

    est = make_labeler(name)
    params = est.get_params()
    assert est.fit(fit_scores, given_targets) is est, "fit must return self"
    # clone: a fresh, unfitted copy with the same settings; get_params round-trips
    twin = clone(est)
    np.testing.assert_equal(twin.get_params(), params)
    np.testing.assert_equal(type(twin)(**params).get_params(), params)
    assert not [k for k in vars(twin) if k.endswith("_") and not k.startswith("_")], \
        "clone kept fitted state"
    # transform changes neither the settings nor the fitted state
    before = fitted_state(est)
    out = est.transform(new)
    np.testing.assert_equal(est.get_params(), params)
    assert_same_state(before, fitted_state(est), f"{name}.transform")
    # the output: (N, C) int8 in {1, 0, -1}; mask None or bool (N, C)
    assert isinstance(out.labels, np.ndarray) and out.labels.dtype == np.int8
    assert out.labels.shape == (N_NEW, C)
    validate_labels(out.labels, n_classes=C, what=name)
    assert out.mask is None or (out.mask.dtype == np.bool_ and out.mask.shape == (N_NEW, C))
    assert out.provenance["method"] == name
    # deterministic, and fit_transform == fit().transform() on the same rows
    assert_same_output(out, clone(est).fit(fit_scores, given_targets).transform(new),
                       f"{name}: a second fit")
    assert_same_output(clone(est).fit_transform(fit_scores, given_targets),
                       clone(est).fit(fit_scores, given_targets).transform(fit_scores),
                       f"{name}: fit_transform")


@pytest.mark.parametrize("name", pseudo.list_pseudo_labelers())
def test_pseudo_labeler_transform_before_fit(name):
    """Stateless labellers label at once; the others raise a clear error, never an
    AttributeError about a missing fitted attribute."""
    _, _, new = pseudo_data(pseudo.entry(name))
    try:
        out = make_labeler(name).transform(new)
    except (NotFittedError, VlmlError):
        return
    assert out.labels.shape == (N_NEW, C)


@pytest.mark.parametrize("name", pseudo.list_pseudo_labelers(needs_targets=True))
def test_pseudo_labeler_needing_targets_refuses_none(name):
    fit_scores, _, _ = pseudo_data(pseudo.entry(name))
    with pytest.raises(VlmlError):
        make_labeler(name).fit(fit_scores, None)


# ---- dataset readers ---------------------------------------------------------------------------
def test_every_dataset_reader_has_a_fixture():
    missing = sorted(set(vlml.data.list_datasets()) - set(DATASET_FIXTURES))
    assert not missing, (f"dataset(s) {missing} registered without a fixture: add a writer of "
                         "a tiny copy in the real on-disk format to tests/fixtures.py")


@pytest.mark.parametrize("name", vlml.data.list_datasets())
def test_dataset_reader_contract(name, tmp_path):
    if name not in DATASET_FIXTURES:
        pytest.fail(f"no fixture for dataset {name!r} in tests/fixtures.py DATASET_FIXTURES")
    case = DATASET_FIXTURES[name](tmp_path)
    cat = vlml.data.load(name, case.root, case.split, **case.options)
    assert isinstance(cat, Catalog)
    assert cat.class_names == case.class_names
    assert cat.labels.shape == (case.n_images, len(case.class_names))
    assert cat.labels.dtype == np.int8
    validate_labels(cat.labels, n_classes=len(case.class_names), what=name)
    assert len(cat.image_paths) == case.n_images
    assert all(p.is_file() for p in cat.full_paths()), f"{name}: image paths do not resolve"
    if case.split != "any":  # "any": the readers of your own images name their own splits
        assert cat.split == case.split


# ---- registries list without torch -------------------------------------------------------------
LISTINGS = {
    "losses": "import vlml.losses as L\n"
              "for n in L.list_losses():\n"
              "    e = L.get(n)\n"
              "    (e.description, dict(e.defaults), e.params('voc2007'), e.batch_inputs,\n"
              "     e.unknown, e.ignores_unknown, e.has_state)\n"
              "assert 'masked_asl' in L.list_losses()",
    "datasets": "import vlml.data as D\n"
                "for n in D.list_datasets():\n"
                "    e = D.DATASETS.get(n); (e.splits, e.description)\n"
                "assert 'voc2007' in D.list_datasets()",
    "pseudo-labelers": "import vlml.pseudo as P\n"
                       "for n in P.list_pseudo_labelers():\n"
                       "    e = P.entry(n); (e.description, e.needs_targets)\n"
                       "assert P.list_pseudo_labelers(needs_targets=True)",
    "encoders": "import vlml.encoders as E\n"
                "names = E.list_architectures()\n"
                "assert names[0] == 'toy-clip' and 'ViT-B-32' in names and 'RN50' in names",
    "recipes": "import vlml.recipes as R\n"
               "assert R.list_recipes()",
}


@pytest.mark.parametrize("registry", sorted(LISTINGS))
def test_registry_lists_without_torch(registry):
    code = LISTINGS[registry] + "\nimport sys\nassert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]


def test_dataset_readers_load_without_torch(tmp_path):
    """Not only the records: reading every fixture imports no torch either."""
    code = ("import sys, pathlib, vlml.data\n"
            "from fixtures import DATASET_FIXTURES\n"
            "for i, (name, write) in enumerate(sorted(DATASET_FIXTURES.items())):\n"
            f"    folder = pathlib.Path({str(tmp_path)!r}) / str(i)\n"
            "    folder.mkdir()\n"
            "    case = write(folder)\n"
            "    vlml.data.load(name, case.root, case.split, **case.options)\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]


def test_architectures_listed_without_open_clip_are_open_clips():
    import open_clip

    from vlml.encoders import list_architectures
    from vlml.encoders.registry import TOY_NAME

    names = list_architectures()
    assert names[0] == TOY_NAME
    assert set(names[1:]) <= set(open_clip.list_models())
