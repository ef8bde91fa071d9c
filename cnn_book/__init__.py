"""cnn_book: the code behind "CNN Architectures, Layer by Layer".

- ``cnn_book.models``: ``get_model(name, num_classes=..., in_channels=...)``, ``list_models()``
- ``cnn_book.data``: ``load_fashion_mnist()``, ``load_cifar10()``, data held as tensors on the device, by kind
- ``cnn_book.files``: the cache, downloads with timeouts and hash checks, atomic writes
- ``cnn_book.device``: the default device and the precision it trains in
- ``cnn_book.train``: ``fit``, ``evaluate``, ``predict`` (``CNN_BOOK_QUICK=1`` for quick mode)
- ``cnn_book.cli``: ``python -m cnn_book.train --recipe NAME`` trains a recipe from the command line
- ``cnn_book.distributed``: what changes when ``torchrun`` starts ``fit`` on N processes (DDP), as a ``Group``
- ``cnn_book.tasks``: what differs between kinds of training (classification, segmentation, ...)
- ``cnn_book.recipes``: every chapter's training settings, for a CPU and for a GPU
- ``cnn_book.settings``: the ``CNN_BOOK_*`` environment switches, read in one place
- ``cnn_book.inspect``: ``summary(model)``, the layer-by-layer table
- ``cnn_book.plot``: feature maps, filters, curves, confusion matrices, sample grids
- ``cnn_book.transfer``: reusing an ImageNet network: the ImageNet view of the data, freezing, features, Grad-CAM
- ``cnn_book.exercises``: checkers for the chapters' exercises
"""

from .models import get_model, list_models

__version__ = "0.1.0"
__all__ = ["get_model", "list_models", "__version__"]
