"""Data sets as tensors on the training device, by kind; every file checked, nothing half-written.

- ``images``: ``ImageData`` (uint8 images, the batches ``fit`` reads), binarised images for the VAE;
- ``classification``: Fashion-MNIST (offline first: ``$CNN_BOOK_DATA``, the cache, Debian's
  ``dataset-fashion-mnist``, then a download) and CIFAR-10;
- ``segmentation``: scenes of Fashion-MNIST items with a class per pixel, Oxford-IIIT Pet;
- ``detection``: canvases of Fashion-MNIST items with boxes, NEON tree crowns, YOLO's grid targets;
- ``photos``: public-domain and CC0 photos shipped inside installed packages.

The cache, downloads and atomic writes are ``cnn_book.files``'s; ``python -m cnn_book.data`` fetches
and verifies what the chapters need (``make data``).
"""

from ..files import DataError, cache_dir
from .classification import DEBIAN_DIR, FASHION_MNIST_FILES, fashion_mnist_root, load_cifar10, load_fashion_mnist
from .detection import (
    NEON_TREES,
    DetectionData,
    deepforest_data_dir,
    encode,
    fashion_mnist_detection,
    neon_trees,
    read_voc,
)
from .images import BinaryImages, ImageData, batch_indices, binarize, channel_stats, random_flip_and_shift
from .photos import PHOTOS, sample_photo, sample_photos
from .segmentation import PET_CLASSES, SegmentationData, fashion_mnist_scenes, load_oxford_pets

__all__ = [
    "DataError", "cache_dir", "DEBIAN_DIR", "FASHION_MNIST_FILES", "fashion_mnist_root", "load_fashion_mnist",
    "load_cifar10", "ImageData", "BinaryImages", "binarize", "batch_indices", "channel_stats",
    "random_flip_and_shift", "SegmentationData", "fashion_mnist_scenes", "load_oxford_pets", "PET_CLASSES",
    "DetectionData", "fashion_mnist_detection", "neon_trees", "read_voc", "deepforest_data_dir", "NEON_TREES",
    "encode", "PHOTOS", "sample_photo", "sample_photos",
]
