"""`vlml export`: one graph from preprocessed pixels to probabilities per model kind, equal to
the PyTorch path (onnxruntime / torch.jit.load) to 1e-4, with a tagger.json another runtime
can follow; folders that are not exports are never overwritten."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from vlml import encoders  # noqa: E402
from vlml.encoders.tiny import make_tiny_checkpoint  # noqa: E402
from vlml.errors import DataError, UnknownChoiceError  # noqa: E402
from vlml.export import ExportError, export_image_model, is_export_folder  # noqa: E402
from vlml.models import (  # noqa: E402
    ContextHead,
    FixedPrompts,
    LabelSpecificHead,
    MultiLabelNet,
    image_model,
    make_head,
)
from vlml.thresholds import Thresholds  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")]

NAMES = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """Tiny random open_clip encoders: a ViT (32 px, 4x4 patches) and a CLIP-ResNet (64 px)."""
    folder = tmp_path_factory.mktemp("clip")
    out = {}
    for tower, size in (("vit", 32), ("resnet", 64)):
        arch, ckpt = make_tiny_checkpoint(folder, tower, size)
        out[tower] = encoders.load(arch, pretrained=str(ckpt), device="cpu")
    return out


def _cbsa(encoder):
    from vlml.recipes.ssmll.cbsa import CBSANet

    g = torch.Generator().manual_seed(0)
    pos, neg = (torch.randn(len(NAMES), encoder.embed_dim, generator=g) for _ in range(2))
    head = LabelSpecificHead(FixedPrompts(pos, neg))
    return image_model.from_cbsa(encoder, CBSANet(head, ContextHead(head.embed_dim, 2)),
                                 cached_tokens=True)


def _model(kind, towers):
    torch.manual_seed(0)
    if kind == "vit_linear":
        return image_model.from_clip_head(towers["vit"], make_head(32, len(NAMES)))
    if kind == "resnet_mlp":
        return image_model.from_clip_head(towers["resnet"], make_head(32, len(NAMES), hidden=16))
    if kind in ("vit_cbsa", "resnet_cbsa"):
        return _cbsa(towers[kind.split("_")[0]])
    assert kind == "net"
    return image_model.from_net(MultiLabelNet.create("test_resnet", len(NAMES)), 32)


def _onnx_probs(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probs"], {"images": x})[0]


@pytest.mark.parametrize("kind", ["vit_linear", "resnet_mlp", "vit_cbsa", "resnet_cbsa", "net"])
def test_onnx_equals_pytorch(kind, towers, tmp_path):
    m = _model(kind, towers)
    done = export_image_model(m, NAMES, None, "onnx", tmp_path / "out")
    assert done.max_abs_diff < 1e-4
    tagger = json.loads(done.tagger_file.read_text())
    assert tagger["verification"]["max_abs_diff"] == done.max_abs_diff
    assert tagger["model"] == {"file": "model.onnx", "format": "onnx", "kind": m.kind,
                               "exporter": "torch.onnx.export(dynamo=True)", "opset": 20}
    h, w = m.image_size
    assert tagger["input"]["shape"] == ["batch", 3, h, w]
    assert tagger["output"]["shape"] == ["batch", len(NAMES)]
    # an independent batch of another size, run by onnxruntime directly
    x = torch.randn((5, 3, h, w), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = m.module(x).numpy()
    assert np.abs(_onnx_probs(done.model_file, x.numpy()) - want).max() < 1e-4


@pytest.mark.parametrize("kind", ["vit_cbsa", "net"])
def test_torchscript_equals_pytorch(kind, towers, tmp_path):
    m = _model(kind, towers)
    done = export_image_model(m, NAMES, None, "torchscript", tmp_path / "out")
    assert done.model_file.name == "model.pt" and done.max_abs_diff < 1e-4
    loaded = torch.jit.load(str(done.model_file))
    x = torch.randn((4, 3, *m.image_size), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert (loaded(x) - m.module(x)).abs().max() < 1e-4


def test_torchscript_traces_cbsa_on_a_clip_resnet(towers, tmp_path):
    """The dense tokens' positional-embedding resize uses integer arithmetic, so tracing
    keeps it (it once read a tensor shape as a float)."""
    m = _model("resnet_cbsa", towers)
    export_image_model(m, NAMES, None, "torchscript", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tagger.json").read_text())[
        "verification"]["max_abs_diff"] < 1e-4


def test_errors_leave_nothing(towers, tmp_path, monkeypatch):
    m = _model("vit_linear", towers)
    with pytest.raises(UnknownChoiceError, match="tflite"):
        export_image_model(m, NAMES, None, "tflite", tmp_path / "a")
    with pytest.raises(DataError, match="4 class names"):
        export_image_model(m, NAMES + ["bus"], None, "torchscript", tmp_path / "a")
    other = Thresholds.constant(["x", "y", "z"])
    with pytest.raises(DataError, match="thresholds"):
        export_image_model(m, NAMES, other, "torchscript", tmp_path / "a")
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_image_model(m, NAMES, None, "torchscript", tmp_path / "a", tolerance=-1.0)
    assert not (tmp_path / "a").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary folders left
    # an occupied folder that is not an export is refused before any work, and kept
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a previous vlml export"):
        export_image_model(m, NAMES, None, "torchscript", busy)
    assert (busy / "notes.txt").read_text() == "mine" and not is_export_folder(busy)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_image_model(m, NAMES, None, "torchscript", tmp_path / "file")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ExportError, match=r"onnxruntime.*pip install 'vlml\[export\]'"):
        export_image_model(m, NAMES, None, "onnx", tmp_path / "a")


# ---- a trained run through the CLI -----------------------------------------------------------
def preprocess(path, spec):
    """The README's preprocessing from tagger.json alone (PIL + numpy): (3, H, W) float32."""
    interp = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR,
              "nearest": Image.NEAREST}[spec["interpolation"]]
    img = Image.open(path).convert("RGB")
    th, tw = spec["size"]
    w, h = img.size
    if spec["resize_mode"] == "squash":
        img = img.resize((tw, th), interp)
    elif spec["resize_mode"] == "shortest":
        if th == tw:  # torchvision Resize(int): shorter side to size, longer truncated
            nw, nh = (th, int(th * h / w)) if w <= h else (int(th * w / h), th)
        else:
            s = min(h / th, w / tw)
            nw, nh = round(w / s), round(h / s)
        img = img.resize((nw, nh), interp)
        left, top = int(round((nw - tw) / 2.0)), int(round((nh - th) / 2.0))
        img = img.crop((left, top, left + tw, top + th))
    else:  # "longest": fit inside, pad with fill_color, centred
        s = max(h / th, w / tw)
        nw, nh = round(w / s), round(h / s)
        img = img.resize((nw, nh), interp)
        canvas = Image.new("RGB", (tw, th), (spec.get("fill_color", 0),) * 3)
        canvas.paste(img, ((tw - nw) // 2, (th - nh) // 2))
        img = canvas
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.array(spec["mean"], np.float32)[:, None, None]
    std = np.array(spec["std"], np.float32)[:, None, None]
    return (x - mean) / std


@pytest.mark.integration
def test_cli_exports_a_trained_run_that_onnxruntime_runs(towers, tmp_path, capsys):
    from spml_world import make_cfg, make_world
    from vlml import runs
    from vlml.cli.main import main
    from vlml.types import Catalog

    world = make_world(tmp_path / "world")
    run_dir = runs.run(make_cfg(world, tmp_path, "optim.epochs=1")).run_dir
    classes = runs.load(run_dir).class_names
    Thresholds(tuple(classes), np.array([0.3, 0.4, 0.5, 0.6]),
               np.array([True, True, True, False]), target="f1", source="test").save(run_dir)
    out = tmp_path / "tagger"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.onnx" in printed and "max abs difference vs PyTorch" in printed

    tagger = json.loads((out / "tagger.json").read_text())
    assert tagger["class_names"] == classes and tagger["recipe"] == "spml"
    assert tagger["thresholds"]["source"] == "thresholds.json"
    assert tagger["thresholds"]["values"] == [0.3, 0.4, 0.5, 0.6]
    assert tagger["thresholds"]["calibrated"] == [True, True, True, False]
    assert tagger["encoder"]["identity"]["weights"].startswith("sha256:")
    assert tagger["verification"]["max_abs_diff"] < 1e-4
    # the test images, preprocessed from tagger.json alone and run by onnxruntime, give the
    # run's own test scores
    spec = tagger["preprocess"]
    test = Catalog.load(world[1]["test"])
    x = np.stack([preprocess(p, spec) for p in test.full_paths()])
    session = ort.InferenceSession(str(out / tagger["model"]["file"]))
    probs = session.run([tagger["output"]["name"]], {tagger["input"]["name"]: x})[0]
    assert np.abs(probs - np.load(run_dir / "test_scores.npy")).max() < 1e-4
    # that preprocessing is the run's own on an image of another size and shape
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 70, 3), np.uint8)).save(
        tmp_path / "odd.png")
    own = runs.load(run_dir).image_model().preprocess(Image.open(tmp_path / "odd.png"))
    assert np.abs(preprocess(tmp_path / "odd.png", spec) - own.numpy()).max() < 1e-5

    # a previous export is replaced as a whole (the ONNX files go, model.pt comes)
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "tagger.json"]
    with pytest.raises(SystemExit):
        main(["export", str(run_dir), "--format", "tflite", "--out", str(out)])
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), "--out", str(out)]) == 2  # not an export any more
    assert "not a previous vlml export" in capsys.readouterr().err
