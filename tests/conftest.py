"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster single-threaded (far faster on a busy machine), and the demo's
    numbers are measured with one thread. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Random-init tiny open_clip checkpoints by kind ("vit", "vit_seed1", "resnet"), each
    `(arch, checkpoint path)`; image sides 32, 32 and 64 px."""
    from vlml.encoders.tiny import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny")
    return {"vit": make_tiny_checkpoint(folder, "vit", 32),
            "vit_seed1": make_tiny_checkpoint(folder, "vit", 32, seed=1),
            "resnet": make_tiny_checkpoint(folder, "resnet", 64)}


@pytest.fixture(scope="module")
def vit(ckpts):
    """The tiny ViT of `ckpts`, loaded as an `Encoder`."""
    from vlml.encoders import load

    arch, ckpt = ckpts["vit"]
    return load(arch, pretrained=str(ckpt))


@pytest.fixture(scope="module")
def resnet(ckpts):
    """The tiny ResNet of `ckpts`, loaded as an `Encoder`."""
    from vlml.encoders import load

    arch, ckpt = ckpts["resnet"]
    return load(arch, pretrained=str(ckpt))


@pytest.fixture
def unreachable(monkeypatch):
    """Network allowed by the environment, but the download host does not answer; the list
    of probed URLs."""
    from vlml.encoders import weights as weights_mod
    from vlml.models import backbone as backbone_mod

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probed = []

    def probe(url, timeout=weights_mod.PROBE_TIMEOUT_S):
        probed.append(url)
        return False, "mocked DNS failure"

    monkeypatch.setattr(weights_mod, "host_reachable", probe)
    monkeypatch.setattr(backbone_mod, "host_reachable", probe)
    return probed
