"""Train the tiny CLIP shipped as src/vlml/assets/tiny_clip.safetensors, then evaluate it.

Contrastive pre-training on toy scenes of world seed 10,000 (disjoint from the toy splits, seeds
1-3) with captions that name all objects or, half of the time, a random non-empty subset. The
saved file is then reloaded through open_clip's local-checkpoint path and scored zero-shot on
held-out PNG scenes (the "test" toy split), reading images with open_clip's own preprocessing.

    python scripts/train_tiny_clip.py                 # train (about 3 minutes on 2 cores), save
    python scripts/train_tiny_clip.py --eval-only     # evaluate the shipped file

`--size N` (default 64) renders the pre-training and evaluation scenes at N px and trains a copy
of the shipped architecture whose `vision_cfg.image_size` is N, written to `--config`
(default `<out dir>/tiny_clip_<N>.json`; its stem is the open_clip architecture name, load it
with `vlml.encoders.add_model_config`); `--out` must then be given (the shipped file is 64 px).

Same arguments, same machine: same weights (seeded init, data order and captions, fixed threads).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import open_clip
import safetensors.torch
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from sklearn.metrics import average_precision_score

from vlml.assets import TINY_CLIP_CONFIG, TINY_CLIP_WEIGHTS, register_tiny_clip
from vlml.data.toy import PRETRAIN_SEED, TOY_CLASSES, TOY_SPLITS, generate_toy, render_scene
from vlml.data.toy_captions import caption_for
from vlml.encoders import add_model_config
from vlml.fileio import atomic_open

PROMPT = "a photo of a {}."


# ---- data -------------------------------------------------------------------------------------
def _render_chunk(args: tuple[int, int, int, int]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    seed, start, stop, size = args
    scenes = [render_scene(seed, i, size) for i in range(start, stop)]
    return np.stack([s.image for s in scenes]), [s.classes for s in scenes]


def render_pool(seed: int, n: int, size: int, workers: int) -> tuple[np.ndarray, list]:
    """Scenes 0..n-1 of world `seed`: images (n, size, size, 3) uint8 and their classes."""
    bounds = np.linspace(0, n, 8 * workers + 1).astype(int)
    jobs = [(seed, int(a), int(b), size) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(_render_chunk, jobs))
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float normalised like open_clip's preprocessing."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random dihedral transform (flips, 90-degree turns) per image; labels do not change."""
    out = np.empty_like(images)
    for i, (k, flip) in enumerate(zip(rng.integers(4, size=len(images)),
                                      rng.integers(2, size=len(images)), strict=True)):
        im = np.rot90(images[i], k)
        out[i] = im[:, ::-1] if flip else im
    return out


# ---- training ---------------------------------------------------------------------------------
def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(model: torch.nn.Module, tokenizer, images: np.ndarray, classes: list, steps: int,
          batch: int, lr: float, seed: int) -> set[int]:
    """Symmetric InfoNCE over (scene, caption) pairs; returns the token ids the captions used."""
    decay = [p for n, p in model.named_parameters()
             if p.ndim >= 2 and "token_embedding" not in n and "positional" not in n]
    no_decay = [p for n, p in model.named_parameters()
                if not (p.ndim >= 2 and "token_embedding" not in n and "positional" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    rng = np.random.default_rng([seed, 1])
    order = np.concatenate([rng.permutation(len(images))
                            for _ in range(steps * batch // len(images) + 1)])
    used: set[int] = set()
    model.train()
    t0 = time.time()
    for step in range(steps):
        idx = order[step * batch:(step + 1) * batch]
        x = to_tensor(augment(images[idx], rng))
        captions = [caption_for([TOY_CLASSES[c] for c in classes[i]], rng) for i in idx]
        tokens = tokenizer(captions)
        used.update(torch.unique(tokens).tolist())
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=min(50, steps // 10 + 1))
        img, txt, scale = model(x, tokens)
        logits = scale * img @ txt.T
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  scale {scale.item():5.1f}  "
                  f"{time.time() - t0:6.1f}s", flush=True)
    return used


def shipped_state_dict(model: torch.nn.Module, used_tokens: set[int]) -> dict[str, torch.Tensor]:
    """fp16 state dict with the token-table rows no caption used set to zero (those rows never
    received a gradient; zeros compress, random rows do not)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    table = state["token_embedding.weight"]
    keep = torch.zeros(table.shape[0], dtype=torch.bool)
    keep[sorted(used_tokens | {0})] = True
    table[~keep] = 0
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


@torch.no_grad()
def shipping_drift(model: torch.nn.Module, state: dict[str, torch.Tensor], tokenizer,
                   images: np.ndarray, name: str | None = None) -> tuple[float, float]:
    """Largest change in normalised (image, prompt) embeddings that zeroing unused token rows
    and storing fp16 cause: max |difference| over 256 images and the 16 class prompts."""
    shipped = open_clip.create_model(name or register_tiny_clip())
    shipped.load_state_dict(state)
    tokens = tokenizer([PROMPT.format(c) for c in TOY_CLASSES])
    x = to_tensor(images[:256])
    model.eval()
    shipped.eval()
    d_img = F.normalize(model.encode_image(x), dim=-1) - F.normalize(shipped.encode_image(x),
                                                                     dim=-1)
    d_txt = F.normalize(model.encode_text(tokens), dim=-1) - F.normalize(
        shipped.encode_text(tokens), dim=-1)
    return d_img.abs().max().item(), d_txt.abs().max().item()


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    # One metadata key: safetensors writes several in no fixed order, which breaks byte equality.
    data = safetensors.torch.save(state, metadata={"format": "pt"})
    with atomic_open(path, "wb") as f:
        f.write(data)
    path.chmod(0o644)


# ---- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def zero_shot_scores(model, tokenizer, preprocess, paths: list[Path]) -> np.ndarray:
    """(N, C) cosine similarity between each image and each class prompt."""
    text = F.normalize(model.encode_text(tokenizer([PROMPT.format(c) for c in TOY_CLASSES])),
                       dim=-1)
    feats = []
    for start in range(0, len(paths), 256):
        batch = torch.stack([preprocess(Image.open(p)) for p in paths[start:start + 256]])
        feats.append(F.normalize(model.encode_image(batch), dim=-1))
    return (torch.cat(feats) @ text.T).numpy()


def mean_ap(truth: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean([average_precision_score(truth[:, c], scores[:, c])
                          for c in range(truth.shape[1]) if truth[:, c].any()]))


def pseudo_label_quality(truth: np.ndarray, cosine: np.ndarray, tau: float, theta: float,
                         seed: int = 0) -> tuple[float, float, float]:
    """VLPL thresholding on single-positive labels: (precision, recall, positives per image) of
    pseudo-positives among the unobserved entries. The observed positive is drawn at random."""
    rng = np.random.default_rng(seed)
    observed = np.zeros_like(truth, dtype=bool)
    for i, row in enumerate(truth):
        observed[i, rng.choice(np.flatnonzero(row))] = True
    s = torch.softmax(torch.from_numpy(cosine) / tau, dim=1).numpy()
    pseudo = (s > theta) & ~observed
    hidden = (truth == 1) & ~observed
    tp = (pseudo & hidden).sum()
    return (float(tp / max(1, pseudo.sum())), float(tp / max(1, hidden.sum())),
            float(pseudo.sum() / len(truth)))


def evaluate(weights: Path, n_eval: int, workdir: Path, name: str | None = None,
             size: int = 64) -> None:
    name = name or register_tiny_clip()
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(weights))
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    seed = TOY_SPLITS["test"][0]
    cat = generate_toy(workdir, n_eval, seed=seed, size=size, split="test", progress=False)
    scene = render_scene(seed, 0, size)
    direct = to_tensor(scene.image[None])[0]
    via_png = preprocess(Image.open(cat.full_paths()[0]))
    print(f"preprocessing check: max |open_clip - training| = "
          f"{(direct - via_png).abs().max().item():.2e}")
    cosine = zero_shot_scores(model, tokenizer, preprocess, cat.full_paths())
    truth = cat.labels
    soft = torch.softmax(torch.from_numpy(cosine) / 0.03, dim=1).numpy()
    print(f"zero-shot mAP on {n_eval} test scenes (world seed {seed}): cosine "
          f"{mean_ap(truth, cosine):.4f}, softmax(tau 0.03) {mean_ap(truth, soft):.4f}, "
          f"chance {truth.mean():.3f}")
    hidden_rate = (truth.sum() - len(truth)) / (truth.size - len(truth))
    print(f"VLPL pseudo-positives, tau 0.03 (base rate of an unobserved positive "
          f"{hidden_rate:.3f}):")
    for theta in (0.05, 0.1, 0.2, 0.3, 0.5):
        p, r, k = pseudo_label_quality(truth, cosine, 0.03, theta)
        print(f"  theta {theta:4.2f}: precision {p:.3f}  recall {r:.3f}  per image {k:.2f}")


def register_size_config(size: int, path: Path) -> str:
    """Write the shipped config with `vision_cfg.image_size = size` to `path` (stem = the
    architecture name) and register it with open_clip; returns the name."""
    cfg = json.loads(TINY_CLIP_CONFIG.read_text())
    cfg["vision_cfg"]["image_size"] = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or json.loads(path.read_text()) != cfg:
        path.write_text(json.dumps(cfg, indent=4) + "\n")
    return add_model_config(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pool", type=int, default=20_000, help="distinct training scenes")
    ap.add_argument("--world-seed", type=int, default=PRETRAIN_SEED)
    ap.add_argument("--seed", type=int, default=0, help="init, data order and captions")
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, help="processes rendering the scenes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (part of the recipe)")
    ap.add_argument("--out", type=Path, default=TINY_CLIP_WEIGHTS)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--size", type=int, default=64,
                    help="scene and model input size in px (64 = the shipped model)")
    ap.add_argument("--config", type=Path, default=None,
                    help="with --size other than 64: where to write the model config "
                         "(default <out dir>/tiny_clip_<size>.json)")
    args = ap.parse_args()
    name = None  # None: the shipped 64-px config (register_tiny_clip)
    if args.size != 64:
        if args.out == TINY_CLIP_WEIGHTS:
            ap.error("--size other than 64 needs --out (the shipped weights are 64 px)")
        name = register_size_config(args.size, args.config or
                                    args.out.parent / f"tiny_clip_{args.size}.json")

    if not args.eval_only:
        t0 = time.time()
        torch.manual_seed(args.seed)
        # CPU kernels are deterministic at a fixed thread count; torch's deterministic mode
        # would triple the step time here for no gain.
        torch.set_num_threads(args.threads)
        images, classes = render_pool(args.world_seed, args.pool, args.size, args.workers)
        print(f"rendered {len(images)} scenes of world {args.world_seed} "
              f"in {time.time() - t0:.1f}s", flush=True)
        name = name or register_tiny_clip()
        model = open_clip.create_model(name)
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters")
        used = train(model, open_clip.get_tokenizer(name), images, classes, args.steps,
                     args.batch, args.lr, args.seed)
        model.eval()
        state = shipped_state_dict(model, used)
        tokenizer = open_clip.get_tokenizer(name)
        print("max embedding change from zeroed rows + fp16: image {:.1e}, text {:.1e}".format(
            *shipping_drift(model, state, tokenizer, images, name)))
        save_weights(state, args.out)
        print(f"trained in {time.time() - t0:.1f}s; {len(used)} token ids used; wrote {args.out} "
              f"({args.out.stat().st_size / 1e6:.2f} MB)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        evaluate(args.out, args.eval_n, Path(tmp), name, args.size)


if __name__ == "__main__":
    main()
