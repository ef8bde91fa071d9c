import gzip
import hashlib
import os
import pickle
import shutil
import stat

import numpy as np
import pytest
import torch

import cnn_book.data.classification as data
import cnn_book.files as files
from cnn_book.data import (
    DataError,
    channel_stats,
    fashion_mnist_root,
    load_cifar10,
    load_fashion_mnist,
    random_flip_and_shift,
)


def test_fashion_mnist_is_complete_and_verified(fmnist):
    assert fmnist.train_x.shape == (60000, 1, 28, 28) and fmnist.train_x.dtype == torch.uint8
    assert fmnist.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(fmnist.train_y).tolist() == [6000] * 10
    assert torch.bincount(fmnist.test_y).tolist() == [1000] * 10
    assert fmnist.classes[0] == "T-shirt/top" and fmnist.classes[9] == "Ankle boot"
    # mean and std are measured on the training set
    assert fmnist.mean[0] == pytest.approx(fmnist.train_x.float().mean().item() / 255, rel=1e-4)
    assert fmnist.std[0] == pytest.approx((fmnist.train_x.float() / 255).std().item(), rel=1e-3)
    raw = fashion_mnist_root() / "FashionMNIST" / "raw"
    for name, sha in data.FASHION_MNIST_FILES.items():
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == sha


def _source_with_the_four_files(tmp_path, raw):
    """A $CNN_BOOK_DATA folder with the real files, gzipped, as Debian ships them."""
    src = tmp_path / "src" / "fashion-mnist"
    src.mkdir(parents=True)
    for name in data.FASHION_MNIST_FILES:
        with open(raw / name, "rb") as f, gzip.open(src / f"{name}.gz", "wb", compresslevel=1) as g:
            shutil.copyfileobj(f, g)
    return src


def test_data_env_folder_comes_first_and_fills_the_cache(isolated_data, monkeypatch, real_raw, fmnist):
    src = _source_with_the_four_files(isolated_data, real_raw)
    monkeypatch.setenv("CNN_BOOK_DATA", str(src.parent))
    d = load_fashion_mnist(download=False)
    assert torch.equal(d.test_y, fmnist.test_y)
    assert sorted(p.name for p in (isolated_data / "cache" / "FashionMNIST" / "raw").iterdir()) == sorted(
        data.FASHION_MNIST_FILES)


def test_truncated_file_names_the_file_and_leaves_no_partial_cache(isolated_data, monkeypatch, real_raw):
    src = _source_with_the_four_files(isolated_data, real_raw)
    bad = src / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100_000])  # cut short, as an interrupted copy would be
    monkeypatch.setenv("CNN_BOOK_DATA", str(src))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is truncated or corrupt"):
        load_fashion_mnist(download=False)
    raw = isolated_data / "cache" / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not list(raw.glob(".*part"))  # no half-written file left behind


def test_wrong_content_fails_the_checksum(isolated_data, monkeypatch, real_raw):
    src = _source_with_the_four_files(isolated_data, real_raw)
    with gzip.open(src / "t10k-labels-idx1-ubyte.gz", "wb") as g:
        g.write(b"\x00\x00\x08\x01" + b"\x00" * 10_004)  # right size, wrong labels
    monkeypatch.setenv("CNN_BOOK_DATA", str(src))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is corrupt: the SHA-256"):
        load_fashion_mnist(download=False)
    assert not (isolated_data / "cache" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").exists()


def test_a_damaged_cache_entry_is_replaced_from_the_next_source(isolated_data, monkeypatch, real_raw):
    src = _source_with_the_four_files(isolated_data, real_raw)
    monkeypatch.setattr(data, "DEBIAN_DIR", src)  # the real files, in Debian's place
    raw = isolated_data / "cache" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    load_fashion_mnist(download=False)
    assert hashlib.sha256((raw / "train-labels-idx1-ubyte").read_bytes()).hexdigest() == \
        data.FASHION_MNIST_FILES["train-labels-idx1-ubyte"]


def test_no_data_and_no_network_gives_one_message_with_the_ways_to_get_it(isolated_data, monkeypatch, real_raw):
    from torchvision.datasets import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens: offline
    with pytest.raises(DataError) as err:
        load_fashion_mnist()
    msg = str(err.value)
    assert "Fashion-MNIST was not found" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "CNN_BOOK_DATA" in msg
    assert str(isolated_data / "no-debian") in msg  # it says where it looked
    assert not list((isolated_data / "cache").glob(".download-*"))  # no half-written download
    with pytest.raises(DataError, match="download=False"):
        load_fashion_mnist(download=False)


def _write_cifar(root, n_per_batch=20):
    """A small CIFAR-10 in the real format: pickled dicts of uint8 rows, 3x32x32 channel-first."""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / CIFAR10.meta["filename"], "wb") as f:
        pickle.dump({"label_names": names}, f)
    md5 = lambda name: hashlib.md5((folder / name).read_bytes()).hexdigest()  # noqa: E731
    return folder, md5


def test_cifar10_through_torchvision_on_a_small_file_in_its_format(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder, md5 = _write_cifar(tmp_path)
    # torchvision checks every file's md5: point its table at the files this test wrote
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5(n)] for n, _ in CIFAR10.test_list])
    monkeypatch.setitem(CIFAR10.meta, "md5", md5(CIFAR10.meta["filename"]))
    d = load_cifar10(tmp_path, download=False)
    assert d.train_x.shape == (100, 3, 32, 32) and d.test_x.shape == (20, 3, 32, 32)
    assert d.classes[0] == "airplane" and len(d.mean) == 3
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f)
    # row layout: 1024 red, 1024 green, 1024 blue values of a 32x32 image
    assert torch.equal(d.train_x[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)))
    assert d.train_y[0].item() == first["labels"][0]
    x, y = next(d.batches("train", 16, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    # a corrupted file is refused with the folder named
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="CIFAR-10 is not in"):
        load_cifar10(tmp_path, download=False)


def test_batches_are_prepared_on_the_device(small_fmnist):
    x, y = next(small_fmnist.batches("train", 64))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    full = small_fmnist.prepare(small_fmnist.train_x)
    assert abs(full.mean().item()) < 0.15 and 0.8 < full.std().item() < 1.2  # normalised
    big = small_fmnist.with_input(size=64)
    assert big.input_shape == (1, 64, 64) and next(big.batches("test", 8))[0].shape == (8, 1, 64, 64)
    padded = small_fmnist.with_input(pad=2)
    assert padded.input_shape == (1, 32, 32)
    border = padded.prepare(small_fmnist.test_x[:4])[:, :, :2, :]
    assert torch.allclose(border, torch.tensor(-small_fmnist.mean[0] / small_fmnist.std[0]))  # zero pad
    n = sum(len(b[1]) for b in small_fmnist.batches("train", 100, shuffle=True, limit=250))
    assert n == 250
    with pytest.raises(ValueError, match="split must be"):
        small_fmnist.split("val")


def test_augmentation_flips_and_shifts_each_image_on_its_own():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3, 1] = 1.0  # one bright pixel, left of centre
    g = torch.Generator().manual_seed(0)
    out = random_flip_and_shift(x, shift=1, generator=g)
    assert out.shape == x.shape and torch.allclose(out.sum(dim=(1, 2, 3)), torch.ones(64))
    cols = out[:, 0].sum(1).argmax(1)
    assert cols.min() <= 2 and cols.max() >= 5  # some kept left, some flipped right
    assert len(set(cols.tolist())) > 2


def test_channel_stats_match_torch():
    x = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=7)
    xf = x.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), xf.mean(dim=(0, 2, 3)), atol=1e-9)
    population_std = xf.transpose(0, 1).reshape(3, -1).std(1, unbiased=False)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), population_std, atol=1e-9)


def test_every_flipped_bit_of_a_gz_file_names_the_file(tmp_path, real_raw):
    """Some corruptions of a .gz fail the CRC, some the length, some zlib itself: each is a DataError
    that names the file, never a bare zlib.error."""
    name = "t10k-labels-idx1-ubyte"
    blob = gzip.compress((real_raw / name).read_bytes())  # a 10-byte header, then the deflate stream
    bad = tmp_path / "bad" / f"{name}.gz"
    bad.parent.mkdir()
    for k, pos in enumerate(range(10, len(blob), max(1, len(blob) // 60))):
        bad.write_bytes(blob[:pos] + bytes([blob[pos] ^ (1 << (k % 8))]) + blob[pos + 1:])
        with pytest.raises(DataError, match=f"{name}.gz is (truncated or corrupt|corrupt)"):
            data._copy_verified(bad, tmp_path / "out" / name, data.FASHION_MNIST_FILES[name])
    assert not list((tmp_path / "out").iterdir())


def test_an_unwritable_cache_names_the_folder_and_the_way_out(isolated_data, monkeypatch, real_raw):
    src = _source_with_the_four_files(isolated_data, real_raw)
    monkeypatch.setenv("CNN_BOOK_DATA", str(src))

    def refused(*args, **kwargs):  # as a read-only folder does for a user (the tests may run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    raw = isolated_data / "cache" / "FashionMNIST" / "raw"
    with pytest.raises(DataError, match=f"The data cache {raw} cannot be written .*CNN_BOOK_CACHE"):
        load_fashion_mnist(download=False)


def test_a_valid_cache_is_read_not_rewritten_and_is_shared(isolated_data, monkeypatch, real_raw):
    src = _source_with_the_four_files(isolated_data, real_raw)
    monkeypatch.setenv("CNN_BOOK_DATA", str(src))
    old = os.umask(0o022)  # a classroom machine: others may read what one user cached
    try:
        load_fashion_mnist(download=False)
    finally:
        os.umask(old)
    raw = isolated_data / "cache" / "FashionMNIST" / "raw"
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in raw.iterdir()}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in raw.iterdir())
    load_fashion_mnist(download=False)  # $CNN_BOOK_DATA is still set: the valid cache is used as it is
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in raw.iterdir()} == stamps


def test_two_processes_repairing_the_same_damaged_entry_do_not_collide(isolated_data, monkeypatch, real_raw):
    src = _source_with_the_four_files(isolated_data, real_raw)
    monkeypatch.setattr(data, "DEBIAN_DIR", src)
    raw = isolated_data / "cache" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    checked = data._is_valid

    def another_process_got_there_first(path, sha):
        ok = checked(path, sha)
        if not ok:
            path.unlink()  # the other repairer drops the damaged entry between our check and our unlink
        return ok

    monkeypatch.setattr(data, "_is_valid", another_process_got_there_first)
    load_fashion_mnist(download=False)  # no FileNotFoundError: the entry is repaired from the next source
    monkeypatch.setattr(data, "_is_valid", checked)
    assert checked(raw / "train-labels-idx1-ubyte", data.FASHION_MNIST_FILES["train-labels-idx1-ubyte"])
