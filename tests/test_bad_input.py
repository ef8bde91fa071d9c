"""Bad input, as a careless or unlucky reader gives it: each case ends in a message that says what
is wrong and what to do, never in a silent wrong result or a library's inner error."""

import hashlib
import io
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import pytest
import torch

from cnn_book import inspect
from cnn_book.models import get_model, get_model_builder, list_models

# Builders: options they cannot run are refused when the model is built, naming the option.
BAD_OPTIONS = [
    ("vgg16_cifar", {"input_size": 16}, "needs an input of at least 32x32 (5 poolings that halve it); got "
                                        "input_size=16"),
    ("lenet5", {"variant": "1998", "input_size": 28}, "the 1998 LeNet-5 reads 32x32 images"),
    ("lenet5", {"input_size": 10}, "LeNet-5 needs images of at least 12x12"),
    ("resnet18", {"shortcut": "C"}, "shortcut must be 'A' or 'B', got 'C'"),
    ("resnet18", {"variant": "v2"}, "variant must be 'torchvision' or 'paper'"),
    ("lenet5", {"pool": "min"}, "pool must be 'max' or 'avg'"),
    ("vae", {"variant": "mlp"}, "variant must be 'conv' or 'paper', got 'mlp'"),
    ("yolov1", {"variant": "tiny"}, "variant must be 'paper' or 'fast' or 'small', got 'tiny'"),
    ("simple_cnn", {"num_classes": 0}, "num_classes must be a positive whole number, got 0"),
    ("resnet18", {"num_classes": 2.5}, "num_classes must be a positive whole number, got 2.5"),
    ("mobilenet_v2", {"in_channels": 0}, "in_channels must be a positive whole number, got 0"),
    ("unet", {"in_channels": True}, "in_channels must be a positive whole number, got True"),
]


@pytest.mark.parametrize("name, options, message", BAD_OPTIONS,
                         ids=[f"{n}-{'-'.join(map(str, o))}" for n, o, _ in BAD_OPTIONS])
def test_a_builder_refuses_options_it_cannot_run(name, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_model(name, **options)


@pytest.mark.parametrize("name, option", [("lenet5", "colour"), ("resnet18", "depth")])
def test_an_option_a_builder_does_not_take_is_named(name, option):
    with pytest.raises(TypeError, match=f"argument '{option}'"):  # Python's own words
        get_model(name, **{option: 3})


@pytest.mark.parametrize("name", list_models())
def test_every_builder_refuses_no_classes_and_no_channels(name):
    for key in ("num_classes", "in_channels"):
        with pytest.raises(ValueError, match=f"{name}: {key} must be a positive whole number, got 0"):
            get_model(name, **{key: 0})


def test_options_are_keywords_only():
    with pytest.raises(TypeError, match="positional"):  # 10 is not read as a weights name
        get_model("lenet5", 10)


def _reads_pixels(name: str) -> bool:
    """From the class the builder returns, without building it (collection stays quick)."""
    return getattr(typing.get_type_hints(get_model_builder(name))["return"], "input_dtype", None) is None


@pytest.mark.parametrize("name", [n for n in list_models() if _reads_pixels(n)])
@pytest.mark.parametrize("dtype, fix", [(torch.uint8, r"x.float\(\) / 255"), (torch.float64, r"x.float\(\)")])
def test_every_model_names_a_wrong_input_dtype(name, dtype, fix):
    with torch.device("meta"):  # the check comes before any computation: nothing needs to be computed
        model = get_model(name).eval()
    x = torch.zeros(1, *model.input_shape, dtype=dtype, device="meta")
    with pytest.raises(ValueError, match=f"expects float32 input .*got {str(dtype)[6:]}: convert with {fix}"):
        model(x)


def test_a_model_in_double_precision_takes_double_input():
    model = get_model("lenet5").double()
    assert model(torch.zeros(1, 1, 28, 28, dtype=torch.float64)).dtype == torch.float64


def test_summary_shows_the_model_s_own_error():
    with pytest.raises(ValueError, match=r"LeNet5 expects input of shape \(N, 1, 28, 28\); got \(N, 3, 28, 28\)"):
        inspect.summary(get_model("lenet5"), (3, 28, 28))


# ---------------------------------------------------------------------------------------------
# Published weights: refused options, damaged or planted files, a refused load changes nothing


def _cache(tmp_path, monkeypatch, name, content: bytes, trust: bool = False):
    """Put ``content`` where torch's cache keeps torchvision's ``name`` weights; ``trust``: take its
    SHA-256 for the published one (a test cannot have torchvision's file)."""
    import torchvision

    from cnn_book.models import _api as models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CNN_BOOK_OFFLINE", "1")
    w = torchvision.models.get_model_weights(name)["IMAGENET1K_V1"]
    path = tmp_path / "hub" / "checkpoints" / Path(w.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if trust:
        digest = hashlib.sha256(content).hexdigest()
        monkeypatch.setattr(models, "_published_prefix", lambda filename: digest[:8])
    return path


def _saved(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.mark.parametrize("name, options, message", [
    ("resnet50", {"variant": "paper"}, "trained with variant='torchvision'; variant='paper' would not fit"),
    ("resnet18", {"small_input": True}, "trained with small_input=False"),
    ("mobilenet_v2", {"num_classes": 10}, "for 1000 classes and 3 input channels; num_classes=10"),
    ("efficientnet_b0", {"in_channels": 1}, "for 1000 classes and 3 input channels \\(RGB\\); in_channels=1"),
])
def test_weights_are_refused_for_options_they_do_not_fit(name, options, message, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing is read: the options are refused first
    with pytest.raises(ValueError, match=message + ".*partial=True"):
        get_model(name, weights="IMAGENET1K_V1", **options)


@pytest.mark.parametrize("damage", ["one flipped byte", "truncated", "empty", "an HTML page"])
def test_a_damaged_weights_file_is_named_with_what_to_do(damage, tmp_path, monkeypatch):
    from cnn_book.models import WeightsUnavailable

    good = _saved(get_model("resnet18").state_dict())
    digest = hashlib.sha256(good).hexdigest()
    bad = {"one flipped byte": good[:1000] + bytes([good[1000] ^ 1]) + good[1001:], "truncated": good[: len(good) // 2],
           "empty": b"", "an HTML page": b"<html><body>Please log in</body></html>"}[damage]
    path = _cache(tmp_path, monkeypatch, "resnet18", bad)
    from cnn_book.models import _api as models

    monkeypatch.setattr(models, "_published_prefix", lambda filename: digest[:8])  # the good file's hash
    with pytest.raises(WeightsUnavailable, match=f"{re.escape(str(path))} are damaged.*Delete {re.escape(str(path))}"):
        get_model("resnet18", weights="IMAGENET1K_V1")


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-code-ran",))


def test_a_planted_pickle_does_not_run(tmp_path, monkeypatch):
    from cnn_book.models import WeightsUnavailable

    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"conv1.weight": _Planted()})
    _cache(tmp_path, monkeypatch, "resnet18", payload)  # its hash is not the published one
    with pytest.raises(WeightsUnavailable, match="damaged or not the published file"):
        get_model("resnet18", weights="IMAGENET1K_V1")
    path = _cache(tmp_path, monkeypatch, "resnet18", _saved({"conv1.weight": _Planted()}), trust=True)
    with pytest.raises(WeightsUnavailable, match=f"{re.escape(str(path))} could not be read as weights"):
        get_model("resnet18", weights="IMAGENET1K_V1")  # even with a matching hash: weights_only=True
    assert not (tmp_path / "planted-code-ran").exists()


def test_weights_of_another_architecture_leave_the_model_unchanged(tmp_path, monkeypatch):
    from cnn_book.models import load_torchvision_weights

    _cache(tmp_path, monkeypatch, "resnet50", _saved(get_model("resnet18").state_dict()), trust=True)
    model = get_model("resnet50")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unchanged = r"do not fit this model: .*layer1.0.conv3.weight.*The model is unchanged.*is not torchvision's file"
    with pytest.raises(ValueError, match=unchanged):
        load_torchvision_weights(model, "resnet50", "IMAGENET1K_V1")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# Downloads: a server that never answers, and interrupted downloads


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers: the URL of a file on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)  # the kernel completes the handshakes; nobody ever reads or answers
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/weights-0123abcd.pth"
    sock.close()


@pytest.fixture
def stalling_server():
    """A server that sends the start of a 1 MB file, then stalls until the test ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 10_000)
            done.wait(30)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/big-0123abcd.pth"
    done.set()
    sock.close()


def test_a_server_that_never_answers_times_out_with_what_to_do(silent_server, tmp_path, monkeypatch):
    from cnn_book.files import DownloadError, download

    monkeypatch.setenv("CNN_BOOK_TIMEOUT", "1")
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match=r"No answer from .* within 1 s .*CNN_BOOK_TIMEOUT.*Offline, copy it"):
        download(silent_server, tmp_path / "w.pth", what="the test's file", offline_hint="Offline, copy it.")
    assert time.perf_counter() - t0 < 10 and list(tmp_path.iterdir()) == []


def test_fashion_mnist_download_times_out(silent_server, isolated_data, monkeypatch, real_raw):
    from torchvision.datasets import FashionMNIST

    from cnn_book.data import DataError, load_fashion_mnist

    monkeypatch.setenv("CNN_BOOK_TIMEOUT", "1")
    monkeypatch.setattr(FashionMNIST, "mirrors", [silent_server.rsplit("/", 1)[0] + "/"])
    killed = isolated_data / "cache" / ".download-999999999-x"  # a SIGKILLed run's staging folder
    (killed / "FashionMNIST" / "raw").mkdir(parents=True)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="No answer from the server within 1 s while downloading Fashion-MNIST"):
        load_fashion_mnist()
    assert time.perf_counter() - t0 < 30
    assert not list((isolated_data / "cache").glob(".download-*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_an_interrupted_download_leaves_nothing_behind(sig, stalling_server, tmp_path):
    from cnn_book.files import DownloadError, download

    # Ctrl-C's default: a job started in the background by a shell without job control inherits SIGINT
    # ignored (and Python then installs no KeyboardInterrupt), which is not the reader's terminal
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "import sys; from pathlib import Path; from cnn_book.files import download\n"
            f"download({stalling_server!r}, Path({str(tmp_path / 'w.pth')!r}), what='w', offline_hint='')")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 30
    while not list(tmp_path.glob(".w.pth.*.part")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".w.pth.*.part")), "the download did not start"
    proc.send_signal(sig)
    proc.wait(30)
    assert not (tmp_path / "w.pth").exists()  # never a half-written file under the real name
    if sig == signal.SIGKILL:  # nothing can clean up after SIGKILL: the next download does
        assert list(tmp_path.glob(".w.pth.*.part"))
        os.environ["CNN_BOOK_TIMEOUT"] = "1"
        try:
            with pytest.raises(DownloadError):
                download(stalling_server, tmp_path / "w.pth", what="w", offline_hint="")
        finally:
            del os.environ["CNN_BOOK_TIMEOUT"]
    assert list(tmp_path.iterdir()) == []


def test_cifar10_download_times_out(silent_server, tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    from cnn_book.data import DataError, load_cifar10

    monkeypatch.setenv("CNN_BOOK_TIMEOUT", "1")
    monkeypatch.setattr(CIFAR10, "url", silent_server.replace("weights-0123abcd.pth", "cifar-10-python.tar.gz"))
    with pytest.raises(DataError, match="No answer from the server within 1 s while downloading CIFAR-10"):
        load_cifar10(tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []  # no staging folder, no half archive


def test_weights_download_times_out(silent_server, tmp_path, monkeypatch):
    import cnn_book.files
    import cnn_book.models._api
    from cnn_book.models import WeightsUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("CNN_BOOK_OFFLINE", raising=False)
    monkeypatch.setenv("CNN_BOOK_TIMEOUT", "1")
    real = cnn_book.files.download
    monkeypatch.setattr(cnn_book.models._api, "download", lambda url, *a, **k: real(silent_server, *a, **k))
    with pytest.raises(WeightsUnavailable, match=r"No answer from .* within 1 s .*Offline, put the file resnet18-"):
        get_model("resnet18", weights="IMAGENET1K_V1")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
