"""Context identification (methods.md 5.6): co-occurrence, spectral contexts, targets, head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from vlml.contexts import (
    ContextClustering,
    affinity,
    choose_k_eigengap,
    context_known,
    context_priors,
    context_targets,
    cooccurrence,
    identify_contexts,
    load_contexts,
    pseudo_context_targets,
    save_contexts,
    spectral_contexts,
)
from vlml.errors import ConfigError, DataError
from vlml.models.context import ContextHead
from vlml.report.contexts import plot_contexts

L = np.int8


def block_labels(n_blocks: int = 3, size: int = 4, n_images: int = 300, seed: int = 0,
                 perm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images whose positives all come from one block of classes; returns (labels, block id)."""
    rng = np.random.default_rng(seed)
    c = n_blocks * size
    labels = np.zeros((n_images, c), dtype=L)
    for i in range(n_images):
        b = rng.integers(n_blocks)
        k = rng.integers(1, size + 1)
        labels[i, b * size + rng.choice(size, k, replace=False)] = 1
    blocks = np.repeat(np.arange(n_blocks), size)
    if perm is not None:
        labels, blocks = labels[:, perm], blocks[perm]
    return labels, blocks


# ---- co-occurrence ------------------------------------------------------------------------------

def test_cooccurrence_is_the_conditional_probability_by_hand():
    labels = np.array([[1, 1, 0],
                       [1, 0, 0],
                       [1, 1, 1],
                       [0, 1, 1]], dtype=L)
    # N_0 = 3, N_01 = 2, N_02 = 1; N_1 = 3, N_10 = 2, N_12 = 2; N_2 = 2, N_20 = 1, N_21 = 2
    expect = np.array([[1, 2 / 3, 1 / 3],
                       [2 / 3, 1, 2 / 3],
                       [1 / 2, 1, 1]])
    np.testing.assert_allclose(cooccurrence(labels), expect)
    np.testing.assert_allclose(affinity(expect), (expect + expect.T) / 2)


def test_cooccurrence_ignores_unlabeled_rows_and_unknown_entries():
    labeled = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]], dtype=L)
    with_unlabeled = np.vstack([labeled, -np.ones((5, 3), dtype=L)])
    np.testing.assert_array_equal(cooccurrence(with_unlabeled), cooccurrence(labeled))
    partial = np.array([[1, -1, 1],
                        [1, 1, 0],
                        [1, 0, -1]], dtype=L)
    a = cooccurrence(partial)
    # P(1 | 0): images with 0 positive and 1 known are rows 1, 2 -> 1 of 2
    assert a[0, 1] == pytest.approx(1 / 2)
    # P(2 | 0): rows 0, 1 -> 1 of 2;  P(0 | 2): row 0 only -> 1
    assert a[0, 2] == pytest.approx(1 / 2) and a[2, 0] == pytest.approx(1.0)


def test_class_never_positive_has_a_zero_row():
    labels = np.array([[1, 0, 0], [1, 1, 0]], dtype=L)
    a = cooccurrence(labels)
    np.testing.assert_array_equal(a[2], 0.0)
    assert a[0, 0] == 1.0 and a[1, 1] == 1.0


# ---- spectral clustering ---------------------------------------------------------------------

@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_spectral_clustering_recovers_block_diagonal_cooccurrence(noise):
    perm = np.random.default_rng(1).permutation(12)
    labels, blocks = block_labels(perm=perm)
    aff = affinity(cooccurrence(labels))
    aff = aff + noise * (1 - np.eye(12))          # weak links between all classes
    clusters = spectral_contexts(aff, 3, seed=0)
    assert adjusted_rand_score(blocks, clusters) == 1.0
    assert clusters[0] == 0 and set(clusters) == {0, 1, 2}       # canonical numbering
    assert choose_k_eigengap(aff) == 3


def test_clustering_is_deterministic_given_the_seed():
    labels, _ = block_labels(n_blocks=4, size=3, seed=5)
    aff = affinity(cooccurrence(labels)) + 0.1
    np.testing.assert_array_equal(spectral_contexts(aff, 4, seed=7),
                                  spectral_contexts(aff, 4, seed=7))


def test_identify_contexts_auto_and_given_k():
    labels, blocks = block_labels()
    names = [f"class{i}" for i in range(12)]
    unlabeled = -np.ones((50, 12), dtype=L)
    auto = identify_contexts(np.vstack([labels, unlabeled]), names, k="auto", seed=0)
    assert auto.k == 3 and auto.k_method == "eigengap"
    assert adjusted_rand_score(blocks, auto.clusters) == 1.0
    assert auto.members() == [names[0:4], names[4:8], names[8:12]]
    assert auto.info["n_labeled_images"] == 300
    given = identify_contexts(labels, names, k=2)
    assert given.k == 2 and given.k_method == "given"
    with pytest.raises(ConfigError, match="K="):
        identify_contexts(labels, names, k=13)
    with pytest.raises(ConfigError, match="K="):
        identify_contexts(labels, names, k="many")


# ---- context targets ----------------------------------------------------------------------------

CLUSTERS = np.array([0, 0, 1, 1, 2])


def test_context_targets_by_hand():
    labels = np.array([[1, 0, 0, 0, 0],      # class 0 -> context 0
                       [0, 0, 1, 1, 1],      # contexts 1, 2
                       [0, 0, 0, 0, 0],      # nothing
                       [-1, 1, -1, 0, 0],    # context 0; unknowns do not switch anything on
                       [-1, -1, -1, -1, -1]], dtype=L)
    expect = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=L)
    out = context_targets(labels, CLUSTERS)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, expect)
    known = context_known(labels, CLUSTERS)
    np.testing.assert_array_equal(known, [[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1],
                                          [0, 0, 0]])
    assert context_targets(labels, CLUSTERS, k=4).shape == (5, 4)


def test_pseudo_context_targets_use_the_trusted_pseudo_labels_only():
    pseudo = np.array([[1, 0, 0, 0, 1],
                       [0, 0, 1, 0, 0]], dtype=L)
    mask = np.array([[True, True, True, True, False],     # class 4 not trusted
                     [True, True, True, True, True]])
    np.testing.assert_array_equal(pseudo_context_targets(pseudo, CLUSTERS),
                                  [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(pseudo_context_targets(pseudo, CLUSTERS, mask),
                                  [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(pseudo_context_targets(pseudo.astype(bool), CLUSTERS),
                                  [[1, 0, 1], [0, 1, 0]])
    with pytest.raises(DataError, match="pseudo"):
        pseudo_context_targets(pseudo * 2, CLUSTERS)


def test_context_priors_count_labeled_images_only():
    labels = np.array([[1, 0, 0, 0, 0], [0, 0, 1, 0, 1], [-1] * 5], dtype=L)
    np.testing.assert_allclose(context_priors(labels, CLUSTERS), [0.5, 0.5, 0.5])


def test_context_head_is_linear_on_the_normalised_global_feature():
    head = ContextHead(6, 3)
    x = torch.randn(4, 6)
    out = head(x.half())
    assert out.shape == (4, 3) and out.dtype == torch.float32
    torch.testing.assert_close(head(3 * x), head(x))   # scale invariant when normalising
    raw = ContextHead(6, 3, normalize=False)
    torch.testing.assert_close(raw(x), x @ raw.fc.weight.T + raw.fc.bias)


# ---- persistence and plot --------------------------------------------------------------------

def test_json_round_trip(tmp_path):
    clustering = ContextClustering(CLUSTERS, ("a", "b", "c", "d", "e"), "given",
                                   info={"seed": 0})
    path = save_contexts(tmp_path / "run" / "contexts.json", clustering)
    data = json.loads(path.read_text())
    assert data["k"] == 3 and data["clusters"] == [0, 0, 1, 1, 2]
    assert data["contexts"] == [["a", "b"], ["c", "d"], ["e"]]
    back = load_contexts(path)
    np.testing.assert_array_equal(back.clusters, CLUSTERS)
    assert back.class_names == clustering.class_names and back.k_method == "given"
    assert back.info == {"seed": 0}
    assert not list(tmp_path.glob("run/.*tmp"))            # no temp file left behind


def test_load_contexts_reports_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_contexts(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(DataError, match="JSON"):
        load_contexts(bad)
    bad.write_text(json.dumps({"k": 2, "clusters": [0, 0, 1], "class_names": ["a", "b"]}))
    with pytest.raises(DataError, match="bad.json"):
        load_contexts(bad)
    bad.write_text(json.dumps({"k": 3, "clusters": [0, 0, 1], "class_names": ["a", "b", "c"]}))
    with pytest.raises(DataError, match="'k' is 3"):
        load_contexts(bad)


def test_plot_contexts_writes_a_png(tmp_path):
    labels, _ = block_labels()
    result = identify_contexts(labels, [f"class {i}" for i in range(12)], k=3)
    path = plot_contexts(result.affinity, result.clusters, result.class_names,
                         tmp_path / "contexts.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "context 0: class 0, class 1" in result.describe()


def test_models_and_contexts_import_no_matplotlib():
    """The trainable parts and the clustering import no plotting library (the plot lives in
    vlml.report.contexts), so training processes stay light."""
    import subprocess
    import sys

    code = ("import sys, vlml.models, vlml.models.context, vlml.contexts; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
