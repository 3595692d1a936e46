"""Resolve an open_clip pretrained tag to a local checkpoint file, failing fast when offline.

open_clip's own download path retries for about a minute when there is no network. We look in
the local caches first (Hugging Face hub cache, `~/.cache/clip`), then check in a few seconds
that the download host answers, and only then let open_clip download. Without a network the
user gets `WeightsUnavailableError` saying where it looked and how to pass a local checkpoint
file (or `random`) instead. `check_tag` is that check alone (no download), for a run's preflight.

`pretrained="random"` (or "random:<seed>") asks for no weights at all: the architecture's own
random initialisation drawn from a fixed seed (0 unless given), so it is the same model in every
process and its identity ("random:<seed>") keeps its features apart from real weights' in the cache.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from vlml.errors import ConfigError, VlmlError

PROBE_TIMEOUT_S = 5.0
CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt", ".npz")
RANDOM = "random"
RANDOM_SEED = 0


class WeightsUnavailableError(VlmlError, RuntimeError):
    """Pretrained weights named by a tag could not be found locally nor downloaded."""


def tag_config(architecture: str, tag: str) -> dict[str, Any]:
    """open_clip's record for `architecture`/`tag` ({} when the pair is unknown)."""
    from open_clip.pretrained import get_pretrained_cfg

    return dict(get_pretrained_cfg(architecture, tag))


def clean_tag(tag: str) -> str:
    """open_clip's tag normalisation: lower case, '-' -> '_'."""
    return tag.lower().replace("-", "_")


def random_seed(pretrained: object) -> int | None:
    """The init seed of a `random` / `random:<seed>` spelling; None for anything else.

    >>> random_seed("random"), random_seed("random:7"), random_seed("openai")
    (0, 7, None)
    """
    if not isinstance(pretrained, str):
        return None
    head, sep, seed = pretrained.strip().partition(":")
    if head.lower() != RANDOM:
        return None
    if not sep:
        return RANDOM_SEED
    if not seed.isdigit():
        raise ConfigError(f"pretrained={pretrained!r}: expected 'random' or 'random:<seed>' "
                          "with a non-negative integer seed")
    return int(seed)


def looks_like_path(value: str) -> bool:
    """True when `pretrained` is meant as a file rather than a tag."""
    return (os.sep in value or "/" in value or value.startswith((".", "~"))
            or value.lower().endswith(CHECKPOINT_SUFFIXES))


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (remembered per path, size and mtime in this process)."""
    st = os.stat(path)
    memo = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if memo not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _SHA_MEMO[memo] = h.hexdigest()
    return _SHA_MEMO[memo]


def _hub_parts(cfg: dict[str, Any]) -> tuple[str, list[str]]:
    """(repo id, candidate file names in open_clip's order of preference) of a hub entry."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    names = []
    if filename == HF_WEIGHTS_NAME:
        names.append(HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return repo, [*names, filename]


def hub_cached(repo: str, names: list[str], cache_dir: str | None = None,
               revision: str | None = None) -> str | None:
    """The first of `names` in Hugging Face hub repo `repo` that is in the local hub cache
    (`cache_dir`, default HF_HUB_CACHE), without touching the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=cache_dir, revision=revision)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def hub_cache_dir(cache_dir: str | None = None) -> str:
    """Where the Hugging Face hub cache is (`cache_dir` when given)."""
    if cache_dir:
        return str(cache_dir)
    try:
        from huggingface_hub import constants
    except ImportError:
        return "~/.cache/huggingface/hub"
    return str(constants.HF_HUB_CACHE)


def _url_target(cfg: dict[str, Any], cache_dir: str | None) -> Path:
    return Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(cfg["url"])


def _cached_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The checkpoint of `cfg` if it is already on disk, without touching the network."""
    if cfg.get("hf_hub"):
        repo, names = _hub_parts(cfg)
        found = hub_cached(repo, names, cache_dir)
        if found:
            return found
    if cfg.get("url"):
        target = _url_target(cfg, cache_dir)
        if target.is_file():
            return str(target)
    return None


def _looked_in(cfg: dict[str, Any], cache_dir: str | None) -> str:
    places = []
    if cfg.get("hf_hub"):
        repo, names = _hub_parts(cfg)
        places.append(f"the Hugging Face hub cache {hub_cache_dir(cache_dir)} "
                      f"({repo}: {', '.join(names)})")
    if cfg.get("url"):
        places.append(str(_url_target(cfg, cache_dir)))
    return " and ".join(places)


def offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network access."""
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in ("1", "true", "yes", "on")


def _download_host(cfg: dict[str, Any]) -> str:
    if cfg.get("hf_hub"):
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urllib.parse.urlsplit(cfg["url"])
    return f"{parts.scheme}://{parts.netloc}"


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(True, "") if an HTTP server answers at `url` within `timeout` s, else (False, reason)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True, ""
    except urllib.error.HTTPError:
        return True, ""  # the server answered, even if with an error status
    except (urllib.error.URLError, OSError, ValueError) as e:
        return False, str(getattr(e, "reason", e))


def _unavailable(architecture: str, tag: str, reason: str, looked: str = ""
                 ) -> WeightsUnavailableError:
    where = f" Looked in {looked}." if looked else ""
    return WeightsUnavailableError(
        f"weights for {architecture}/{tag} could not be fetched ({reason}; no network?).{where} "
        f"Download them where there is internet access, or point to a local checkpoint file: "
        f"vlml.encoders.load({architecture!r}, pretrained='/path/to/file.bin') in Python, "
        f"`--encoder {architecture} --pretrained /path/to/file.bin` on the command line, or "
        f"`encoder.pretrained=/path/to/file.bin` after a run config for `vlml train`. To test "
        f"a pipeline with no weights at all, use pretrained='random' (`encoder.pretrained="
        f"random`: a seeded random init).")


def check_tag(architecture: str, tag: str, cache_dir: str | None = None) -> str | None:
    """Whether a known open_clip tag's weights can be had, without downloading them: the
    cached checkpoint's path, or None when it is not cached but its download host answers.

    Raises `WeightsUnavailableError` (naming where it looked and the local-file and `random`
    ways out) within `PROBE_TIMEOUT_S` when the file is not cached and the host does not
    answer, at once when `HF_HUB_OFFLINE=1` is set.
    """
    cfg = tag_config(architecture, tag)
    if not cfg:
        raise ValueError(f"{architecture}/{tag} is not an open_clip pretrained tag")
    cached = _cached_file(cfg, cache_dir)
    if cached:
        return cached
    looked = _looked_in(cfg, cache_dir)
    if offline():
        raise _unavailable(architecture, tag, "not in the local cache and HF_HUB_OFFLINE is set",
                           looked)
    host = _download_host(cfg)
    ok, why = host_reachable(host)
    if not ok:
        raise _unavailable(architecture, tag, f"{host} is unreachable: {why}", looked)
    return None


def fetch_tag(architecture: str, tag: str, cache_dir: str | None = None) -> str:
    """Local path of the checkpoint for a known open_clip tag, downloading it if needed.

    Raises `WeightsUnavailableError` within a few seconds when the file is not cached and the
    download host does not answer (or `HF_HUB_OFFLINE=1` is set).
    """
    cached = check_tag(architecture, tag, cache_dir)
    if cached:
        return cached
    cfg = tag_config(architecture, tag)
    from open_clip.pretrained import download_pretrained

    try:
        path = download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # open_clip wraps hub and urllib errors in several types
        raise _unavailable(architecture, tag, f"download failed: {e}") from e
    if not path:
        raise _unavailable(architecture, tag, "open_clip has no download location for it")
    return path
