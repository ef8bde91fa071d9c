"""The book's models, by name: ``get_model("lenet5", num_classes=10)``, ``list_models()``.

Every image model's builder takes ``in_channels``, and every model has an ``input_shape`` (C, H, W) it
expects. The language models (``transformer``, ``gpt2``, ``bert``, ``bert_classifier``, ``bag_of_words``) read token
ids instead: their ``input_shape`` is (T,), a sequence length, and their ``input_dtype`` is long.
A classifier's or a segmenter's builder takes ``num_classes`` too, and the model has ``features``
(the convolutional part) and a head (``classifier``); a detector (``yolov1``, whose ``task`` is
"detection") has them too and returns an S x S x (5B + C) grid per image; a generative model
(``vae``, whose ``task`` is "generative") has an ``encoder`` and a ``decoder`` instead.

The registry and the published weights are in ``_api`` (torchvision's layout); one file per family.
"""

from ._api import (
    OFFLINE_WEIGHTS,
    WeightsUnavailable,
    classify,
    get_model,
    get_model_builder,
    list_models,
    load_torchvision_weights,
    place_offline_weights,
    register_model,
)

# Importing the family files registers their builders.
from .alexnet import AlexNet, alexnet
from .bert import (
    BagOfWords,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    bag_of_words,
    bert,
    bert_classifier,
)
from .efficientnet import (
    EfficientNet,
    efficientnet_b0,
    efficientnet_b1,
    efficientnet_b2,
    efficientnet_b3,
    efficientnet_b4,
    efficientnet_b5,
    efficientnet_b6,
    efficientnet_b7,
)
from .googlenet import GoogLeNet, googlenet
from .gpt import GPT, gpt2
from .lenet import LeNet5, lenet5
from .mobilenet import MobileNetV1, MobileNetV2, mobilenet_v1, mobilenet_v2
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from .simple_cnn import SimpleCNN, simple_cnn
from .transformer import Transformer  # registers "transformer" (the module keeps its name: models.transformer)
from .unet import UNet, unet
from .vae import VAE, vae
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg16_cifar, vgg19, vgg19_bn
from .vit import VisionTransformer, vit, vit_b_16, vit_b_32, vit_l_16
from .yolo import YOLOv1, yolov1

__all__ = [
    "get_model", "get_model_builder", "list_models", "register_model", "load_torchvision_weights",
    "WeightsUnavailable", "classify", "place_offline_weights", "OFFLINE_WEIGHTS",
    "EfficientNet", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "MobileNetV1", "MobileNetV2", "mobilenet_v1", "mobilenet_v2",
    "AlexNet", "alexnet", "GoogLeNet", "googlenet", "LeNet5", "lenet5", "SimpleCNN", "simple_cnn",
    "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "UNet", "unet", "VAE", "vae", "YOLOv1", "yolov1",
    "VisionTransformer", "vit", "vit_b_16", "vit_b_32", "vit_l_16",
    "Transformer", "GPT", "gpt2", "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BagOfWords", "bert",
    "bert_classifier", "bag_of_words",
    "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg16_cifar", "vgg19", "vgg19_bn",
]
