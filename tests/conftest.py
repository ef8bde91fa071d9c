import pytest
import torch

from cnn_book.data import ImageData


@pytest.fixture(scope="session")
def real_raw():
    """The folder holding the verified Fashion-MNIST files on this machine (found before any isolation)."""
    from cnn_book.data import fashion_mnist_root

    return fashion_mnist_root() / "FashionMNIST" / "raw"


@pytest.fixture
def isolated_data(tmp_path, monkeypatch, real_raw):
    """No Fashion-MNIST anywhere: an empty cache, no $CNN_BOOK_DATA, no Debian folder."""
    import cnn_book.data.classification as data

    monkeypatch.setenv("CNN_BOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CNN_BOOK_DATA", raising=False)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    return tmp_path


@pytest.fixture(scope="session")
def fmnist():
    from cnn_book.data import load_fashion_mnist

    return load_fashion_mnist()


@pytest.fixture
def small_fmnist(fmnist):
    """1,024 training and 512 test images of the real data set."""
    return ImageData(fmnist.name, fmnist.classes, fmnist.train_x[:1024], fmnist.train_y[:1024],
                     fmnist.test_x[:512], fmnist.test_y[:512], fmnist.mean, fmnist.std)


@pytest.fixture(scope="session")
def tiny_scenes(fmnist):
    """64 training and 32 test scenes of 48x48, 11 classes (background and the ten items)."""
    from cnn_book.data import fashion_mnist_scenes

    return fashion_mnist_scenes(fmnist, n_train=64, n_test=32, canvas=48)


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("CNN_BOOK_PROGRESS", "0")
    monkeypatch.delenv("CNN_BOOK_QUICK", raising=False)
    torch.manual_seed(0)
