"""Context identification for CBSA (docs/methods.md 5.6): label contexts from co-occurrence.

1. `cooccurrence(labels)`: A_ij = N_ij / N_i, the probability that class j is present given
   class i is, counted on the labeled images only (see the function for unknown entries).
2. `affinity(A)` = (A + A^T) / 2, symmetric.
3. `spectral_contexts(affinity, k, seed)`: scikit-learn spectral clustering of the C classes into
   K contexts (precomputed affinity, fixed seed). `choose_k_eigengap` picks K for `k="auto"`.
4. `context_targets(labels, clusters)`: multi-hot (N, K); context k is on when any positive
   label of the image lies in cluster k. For unlabeled images the same function runs on class
   pseudo-labels (`pseudo_context_targets`).

`identify_contexts` runs steps 1-3 and returns a `ContextClustering`, which is saved as JSON
(`save_contexts` / `load_contexts`). numpy and scikit-learn only: the context head (a torch
module) is `vlml.models.ContextHead`, the plot `vlml.report.contexts.plot_contexts`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlml.errors import ConfigError, DataError
from vlml.fileio import write_json_atomic
from vlml.types import validate_labels

FORMAT_VERSION = 1


def cooccurrence(labels: np.ndarray) -> np.ndarray:
    """A (C, C) float64 with A_ij = N_ij / N_i, the conditional probability P(j | i).

    N_ij counts images with both i and j positive; N_i counts images with i positive and j
    known (0 or 1), so unknown (-1) entries take no part. Rows with no known entry at all
    (unlabeled images) therefore contribute nothing. A_ii = 1 for every class seen positive;
    a class never seen positive has an all-zero row (and no co-occurrence with anything).
    """
    validate_labels(labels, what="labels for the co-occurrence")
    pos = (labels == 1).astype(np.float64)
    known = (labels != -1).astype(np.float64)
    n_ij = pos.T @ pos
    n_i = pos.T @ known
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(n_i > 0, n_ij / np.where(n_i > 0, n_i, 1.0), 0.0)
    return a


def affinity(cooc: np.ndarray) -> np.ndarray:
    """(A + A^T) / 2: the symmetric class affinity spectral clustering runs on."""
    cooc = np.asarray(cooc, dtype=np.float64)
    if cooc.ndim != 2 or cooc.shape[0] != cooc.shape[1]:
        raise DataError(f"expected a square (C, C) matrix, got shape {cooc.shape}", "affinity")
    return (cooc + cooc.T) / 2.0


def check_affinity(aff: np.ndarray) -> np.ndarray:
    """`aff` as a (C, C) float64 array; `DataError` unless square, finite, >= 0 and symmetric."""
    aff = np.asarray(aff, dtype=np.float64)
    if aff.ndim != 2 or aff.shape[0] != aff.shape[1]:
        raise DataError(f"expected a square (C, C) affinity, got shape {aff.shape}", "affinity")
    if not np.all(np.isfinite(aff)) or (aff < 0).any() or not np.allclose(aff, aff.T):
        raise DataError("expected a finite, non-negative, symmetric affinity", "affinity")
    return aff


def laplacian_eigenvalues(aff: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the normalised Laplacian I - D^-1/2 W D^-1/2 (W = `aff`
    without its diagonal, as scikit-learn's spectral embedding uses it)."""
    from scipy.sparse.csgraph import laplacian

    w = check_affinity(aff).copy()
    np.fill_diagonal(w, 0.0)
    return np.sort(np.linalg.eigvalsh(laplacian(w, normed=True)))


def choose_k_eigengap(aff: np.ndarray, k_min: int = 2, k_max: int | None = None) -> int:
    """K in [k_min, k_max] maximising the eigengap lambda_{K+1} - lambda_K of the normalised
    Laplacian (eigenvalues ascending, 1-based). k_max defaults to C - 1, capped at 30.

    On a graph of K disconnected blocks, lambda_1..K = 0 and lambda_{K+1} > 0, so K is found.
    """
    lam = laplacian_eigenvalues(aff)
    c = len(lam)
    k_max = min(c - 1, 30) if k_max is None else min(int(k_max), c - 1)
    if c < 3 or k_min > k_max:
        raise ConfigError(f"cannot choose K in [{k_min}, {k_max}] for {c} classes; "
                          "give K explicitly")
    ks = np.arange(k_min, k_max + 1)
    gaps = lam[ks] - lam[ks - 1]  # lambda_{k+1} - lambda_k with 1-based lambdas
    return int(ks[int(np.argmax(gaps))])


def canonical_clusters(clusters: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..K-1 in order of their smallest class index (a permutation-free form)."""
    clusters = np.asarray(clusters)
    _, first = np.unique(clusters, return_index=True)
    order = clusters[np.sort(first)]
    mapping = {int(old): new for new, old in enumerate(order)}
    return np.array([mapping[int(c)] for c in clusters], dtype=np.int64)


def spectral_contexts(aff: np.ndarray, k: int, seed: int = 0,
                      assign_labels: str = "kmeans") -> np.ndarray:
    """Cluster the C classes into `k` contexts: (C,) int64 in 0..k-1, canonical order.

    scikit-learn `SpectralClustering(affinity="precomputed", random_state=seed)`. A graph that
    falls apart into components (e.g. classes never seen together) is a fine input; sklearn's
    "not fully connected" warning is silenced for it.
    """
    from sklearn.cluster import SpectralClustering

    aff = check_affinity(aff)
    c = aff.shape[0]
    if not isinstance(k, (int, np.integer)) or not 2 <= k <= c:
        raise ConfigError(f"K={k!r} contexts for {c} classes; expected an integer in [2, {c}]")
    model = SpectralClustering(n_clusters=int(k), affinity="precomputed", random_state=seed,
                               assign_labels=assign_labels)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        clusters = model.fit_predict(aff)
    return canonical_clusters(clusters)


@dataclass(frozen=True, eq=False)
class ContextClustering:
    """The C classes grouped into K contexts.

    Attributes:
        clusters: (C,) int64, the context of each class, 0..K-1 (canonical order: context 0
            holds class 0, and so on by first member).
        class_names: the C class names.
        k_method: "given" or "eigengap".
        affinity: (C, C) float64 affinity it was clustered from (not saved in the JSON).
        info: JSON-ready extras (seed, number of labeled images, eigenvalues, ...).
    """

    clusters: np.ndarray
    class_names: tuple[str, ...]
    k_method: str = "given"
    affinity: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clusters = np.asarray(self.clusters, dtype=np.int64)
        object.__setattr__(self, "clusters", clusters)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if clusters.ndim != 1 or len(clusters) != len(self.class_names):
            raise DataError(f"expected one cluster per class ({len(self.class_names)}), got "
                            f"shape {clusters.shape}", "contexts")
        k = int(clusters.max()) + 1 if len(clusters) else 0
        if (clusters < 0).any() or len(np.unique(clusters)) != k:
            raise DataError("cluster ids must be 0..K-1 with every context non-empty",
                            "contexts")

    @property
    def k(self) -> int:
        return int(self.clusters.max()) + 1

    def members(self) -> list[list[str]]:
        """The class names of each context."""
        return [[self.class_names[i] for i in np.flatnonzero(self.clusters == k)]
                for k in range(self.k)]

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "k": self.k, "k_method": self.k_method,
                "class_names": list(self.class_names),
                "clusters": [int(c) for c in self.clusters],
                "contexts": self.members(), "info": self.info}

    def describe(self) -> str:
        """Markdown lines: one per context with its classes (for the run report)."""
        head = f"{self.k} contexts ({self.k_method})"
        return "\n".join([head, ""] + [f"- context {k}: {', '.join(names)}"
                                       for k, names in enumerate(self.members())])


def identify_contexts(labels: np.ndarray, class_names: Sequence[str], k: int | str = "auto",
                      seed: int = 0, k_max: int | None = None) -> ContextClustering:
    """Co-occurrence of `labels` -> affinity -> K contexts (K given, or "auto" = eigengap).

    Pass the labeled part only (rows of unlabeled images are all -1 and would be ignored
    anyway). `labels` (N, C) int8 in {1, 0, -1}.
    """
    validate_labels(labels, n_classes=len(class_names), what="labels for the contexts")
    aff = affinity(cooccurrence(labels))
    lam = laplacian_eigenvalues(aff)
    if k == "auto":
        k_value, method = choose_k_eigengap(aff, k_max=k_max), "eigengap"
    elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        k_value, method = int(k), "given"
    else:
        raise ConfigError(f"K={k!r}; expected a number of contexts or 'auto'")
    clusters = spectral_contexts(aff, k_value, seed=seed)
    n_labeled = int((labels != -1).any(axis=1).sum())
    never = [class_names[i] for i in np.flatnonzero(~(labels == 1).any(axis=0))]
    info = {"seed": seed, "n_labeled_images": n_labeled, "classes_without_positives": never,
            "laplacian_eigenvalues": [round(float(v), 6) + 0.0 for v in lam[:40]]}
    return ContextClustering(clusters, tuple(class_names), method, aff, info)


def _membership(clusters: np.ndarray, k: int | None) -> np.ndarray:
    clusters = np.asarray(clusters)
    if clusters.ndim != 1 or not np.issubdtype(clusters.dtype, np.integer) or (clusters < 0).any():
        raise DataError(f"expected (C,) non-negative integer cluster ids, got "
                        f"{clusters.dtype} of shape {clusters.shape}", "clusters")
    k = int(clusters.max()) + 1 if k is None else int(k)
    if clusters.max() >= k:
        raise DataError(f"cluster id {int(clusters.max())} >= K={k}", "clusters")
    return np.eye(k, dtype=np.int64)[clusters]  # (C, K)


def context_targets(labels: np.ndarray, clusters: np.ndarray, k: int | None = None) -> np.ndarray:
    """(N, K) int8 multi-hot: 1 where any positive label of the image lies in cluster k.

    labels (N, C) int8 in {1, 0, -1}; unknown entries count as "not positive". `k` defaults
    to max(clusters) + 1.
    """
    validate_labels(labels, n_classes=len(clusters), what="labels for the context targets")
    member = _membership(clusters, k)
    return (((labels == 1).astype(np.int64) @ member) > 0).astype(np.int8)


def context_known(labels: np.ndarray, clusters: np.ndarray, k: int | None = None) -> np.ndarray:
    """(N, K) bool: True where the context target is certain, i.e. a positive lies in cluster k
    or every class of cluster k is known. Usable as a loss mask for partly known labels."""
    validate_labels(labels, n_classes=len(clusters), what="labels for the context mask")
    member = _membership(clusters, k)
    unknown = (labels == -1).astype(np.int64) @ member
    return (context_targets(labels, clusters, k) == 1) | (unknown == 0)


def pseudo_context_targets(pseudo_labels: np.ndarray, clusters: np.ndarray,
                           mask: np.ndarray | None = None, k: int | None = None) -> np.ndarray:
    """(N, K) int8 context targets of unlabeled images from their class pseudo-labels.

    pseudo_labels (N, C) in {1, 0, -1} (int8, or bool/0-1 of any integer dtype); `mask` (N, C)
    bool marks the entries to trust (e.g. CAP's loss mask); entries outside it are unknown.
    """
    arr = np.asarray(pseudo_labels)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int8)
    if arr.ndim != 2 or not np.isin(arr, (-1, 0, 1)).all():
        raise DataError(f"expected (N, C) pseudo-labels in {{1, 0, -1}}, got dtype {arr.dtype} "
                        f"shape {arr.shape}", "pseudo-labels")
    labels = arr.astype(np.int8)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != labels.shape or mask.dtype != np.bool_:
            raise DataError(f"expected a bool mask of shape {labels.shape}, got {mask.dtype} "
                            f"{mask.shape}", "pseudo mask")
        labels = np.where(mask, labels, np.int8(-1)).astype(np.int8)
    return context_targets(labels, clusters, k)


def context_priors(labels: np.ndarray, clusters: np.ndarray, k: int | None = None) -> np.ndarray:
    """(K,) float64 fraction of labeled images in each context (for CAP thresholds on the
    context head). Rows with no known label are left out."""
    rows = (labels != -1).any(axis=1)
    if not rows.any():
        raise DataError("no labeled image to compute context priors from", "labels")
    return context_targets(labels[rows], clusters, k).mean(axis=0, dtype=np.float64)


# ---- persistence ------------------------------------------------------------------------------

def save_contexts(path: str | Path, clustering: ContextClustering) -> Path:
    """Write the clustering as JSON atomically: K, the cluster of each class, the class names of
    each context, how K was chosen, and `info`."""
    path = Path(path)
    write_json_atomic(path, clustering.to_json())
    return path


def load_contexts(path: str | Path) -> ContextClustering:
    """Read a `save_contexts` file (the affinity is not stored, so it is None)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError("contexts file not found", str(path)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg} at line {e.lineno})", str(path)) from None
    for key in ("k", "clusters", "class_names"):
        if key not in (data if isinstance(data, dict) else {}):
            raise DataError(f"missing key {key!r}; expected a file written by save_contexts",
                            str(path))
    try:
        out = ContextClustering(np.asarray(data["clusters"], dtype=np.int64),
                                tuple(data["class_names"]), data.get("k_method", "given"),
                                None, data.get("info", {}))
    except (DataError, TypeError, ValueError) as e:
        raise DataError(f"bad clustering: {e}", str(path)) from None
    if out.k != data["k"]:
        raise DataError(f"'k' is {data['k']} but the clusters have {out.k} contexts", str(path))
    return out


__all__ = ["cooccurrence", "affinity", "check_affinity", "laplacian_eigenvalues",
           "choose_k_eigengap", "canonical_clusters", "spectral_contexts", "ContextClustering",
           "identify_contexts", "context_targets", "context_known", "pseudo_context_targets",
           "context_priors", "save_contexts", "load_contexts", "FORMAT_VERSION"]
