"""The Keras port of EfficientNet-Lite0 computes what the PyTorch reference computes, and its ImageNet
head recognises real cats and dogs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from app.core.imaging import ImageSpec, load_image
from training.efficientnet_lite import INPUT_MEAN, INPUT_STD, default_weights_path, efficientnet_lite0
from training.torch_legacy import load_state_dict

PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cats_vs_dogs" / "validation"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOG_CLASSES = range(151, 269)


@pytest.fixture(scope="module")
def keras_model():
    return efficientnet_lite0(include_preprocessing=False, weights=default_weights_path())


def test_state_dict_reader_matches_the_file_layout() -> None:
    state = load_state_dict(default_weights_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.running_var"].dtype == np.float32 and state["_bn0.num_batches_tracked"].dtype == np.int64


def test_state_dict_reader_refuses_arbitrary_globals(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    headers: tuple[object, ...] = (0x1950A86A20F9469CFC6C, 1001, {})  # magic number, protocol, system info
    with path.open("wb") as file:
        for header in headers:
            pickle.dump(header, file, protocol=2)
        file.write(b"cos\nsystem\n(S'echo pwned'\ntR.")  # os.system("echo pwned")
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load os\.system"):
        load_state_dict(path)


def test_logits_match_the_pytorch_reference(keras_model) -> None:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: `pip install torch==2.13.0` to compare")
    reference = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="`pip install efficientnet-lite-pytorch` to compare"
    )
    torch_model = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(default_weights_path()))
    torch_model.eval()
    inputs = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(inputs.transpose(0, 3, 1, 2))).numpy()
    actual = keras_model.predict(inputs, verbose=0)
    difference = float(np.abs(actual - expected).max())
    print(f"max abs logit difference Keras vs PyTorch: {difference:.2e}")
    assert difference <= 1e-3


@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"real cat and dog photos not found at {PHOTOS}")
def test_imagenet_head_recognises_cats_and_dogs_with_the_recorded_normalization(keras_model) -> None:
    spec = ImageSpec(224, 224, 3)
    files = sorted((PHOTOS / "cats").iterdir())[:20] + sorted((PHOTOS / "dogs").iterdir())[:20]
    truth = np.array([0] * 20 + [1] * 20)
    pixels = np.stack([load_image(f.read_bytes(), spec) for f in files]).astype(np.float32)

    def accuracy(inputs: np.ndarray) -> float:
        top = keras_model.predict(inputs, verbose=0).argmax(axis=1)
        kind = np.where(np.isin(top, CAT_CLASSES), 0, np.where(np.isin(top, DOG_CLASSES), 1, -1))
        return float(np.mean(kind == truth))

    recorded = accuracy((pixels - INPUT_MEAN) / INPUT_STD)
    torchvision_style = accuracy(((pixels / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32))
    print(f"cat/dog ImageNet class first: (x-127)/128 {recorded:.2f}, ImageNet mean/std {torchvision_style:.2f}")
    assert recorded >= 0.85
    assert recorded >= torchvision_style
