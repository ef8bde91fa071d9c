"""``python -m cnn_book.data``: fetch and verify once what the chapters read (``make data``)."""

from ..files import DataError
from ..models import place_offline_weights
from ..text import kjv_verses
from .classification import fashion_mnist_root, load_fashion_mnist

d = load_fashion_mnist()
print(f"Fashion-MNIST ready in {fashion_mnist_root()}: {len(d.train_x):,} train / {len(d.test_x):,} test images")
for path in place_offline_weights():
    print(f"Published weights ready, verified, in torch's cache: {path}")
try:
    print(f"The King James Bible ready: {len(kjv_verses()):,} verses")  # for chapters 14 and 15
except DataError as e:
    print(f"The King James Bible is not ready (chapters 14 and 15 need it): {e}")
