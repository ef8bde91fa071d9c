"""Tasks: what differs between kinds of training, so that ``train.fit`` is one loop for all.

A task answers, for one batch of model outputs and targets:

- ``loss(model, output, target)``: the loss to minimise and its named parts (``{"cross_entropy":
  ..., "dice": ...}``; later ``{"reconstruction": ..., "kl": ...}`` or ``{"box": ..., "class": ...}``);
- ``score(output, target)``: sums for the metrics, kept on the device and added over batches;
- ``metrics(sums)``: the figures from those sums (``{"acc": 0.91}``, ``{"acc": 0.95, "miou": 0.66}``);
- ``check(output, target, data)``: mistakes caught before the first step, in the reader's words;
- ``forward(model, x, target)``: the call that gives the output, ``model(x)`` unless the task needs
  less of it (BERT's masked positions only);

and says how its figures are printed (``epoch_line``, ``summary_line``). It is the seam Keras draws
with ``compile(loss, metrics)`` and fastai with ``Learner(loss_func, metrics)``.

The data names its task (``ImageData.task = "classification"``); ``TASKS`` maps the name to the
class. A new kind of chapter adds its task to ``TASKS`` and leaves ``fit`` alone. ``results`` says
which figures of a run go into the book's results table (``cnn_book.results``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .scores import SegmentationScores, confusion_matrix, dense_targets, dice_loss


def get_task(name: str, **options) -> Task:
    """The task registered as ``name``, built with ``options`` (``loss=``, ``label_smoothing=``)."""
    if name not in TASKS:
        raise ValueError(f"no task named {name!r}; registered tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)


class Task:
    """The interface; see the module's docstring. ``losses`` lists the ``loss=`` names it accepts."""

    name: ClassVar[str] = ""
    losses: ClassVar[tuple[str, ...]] = ()
    eval_batch_size: ClassVar[int] = 1000  # batches are larger without gradients to keep

    def __init__(self, loss: str | None = None, label_smoothing: float = 0.0) -> None:
        loss = loss or self.losses[0]
        if loss not in self.losses:
            raise ValueError(f"loss={loss!r} does not fit a {self.name} task, which takes "
                             f"{' or '.join(map(repr, self.losses))}")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or \
                not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing is the share of the target spread over the other classes: a number "
                             f"from 0 (none) up to, not including, 1; got {label_smoothing!r}")
        self.loss_name, self.label_smoothing = loss, label_smoothing

    def forward(self, model: nn.Module, x: Tensor, target: Tensor):
        """The model's output for a batch: all of it, ``model(x)``, for every task but one."""
        return model(x)

    def loss(self, model: nn.Module, output, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def evaluation_loss(self, model: nn.Module, output, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss reported on held-out data: the training loss unless a task says otherwise."""
        return self.loss(model, output, target)

    def score(self, output, target: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def metrics(self, sums: dict[str, Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def check(self, output, target: Tensor, data) -> None:
        pass

    def random_batch(self, n: int, input_shape: tuple[int, ...], classes: int,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """A random batch of ``n`` inputs and targets of this task's kinds (tests, ``recipes.one_step``)."""
        return torch.randn(n, *input_shape, device=device), torch.randint(0, classes, (n,), device=device)

    def epoch_line(self, train: dict[str, float], test: dict[str, float]) -> str:
        return "  ".join(f"test {k} {v:.3f}" for k, v in test.items() if k != "loss")

    def summary_line(self, test: dict[str, float]) -> str:
        return self.epoch_line({}, test)

    def results(self, curves: dict[str, list[float]]) -> dict[str, float]:
        """The figures of a run's ``History.curves`` that its row of the results table keeps besides
        the test accuracy: none for a classifier."""
        return {}


def main_output(output) -> Tensor:
    """The prediction itself: a model with auxiliary heads (GoogLeNet in training) returns a tuple."""
    return output[0] if isinstance(output, tuple) else output


class Classification(Task):
    """One class per image: logits (N, K) against labels (N,). Cross-entropy, accuracy.

    A model with auxiliary classifiers (GoogLeNet in training) returns (logits, aux, ...); each
    auxiliary loss is added with the model's ``aux_loss_weight`` (the paper's 0.3)."""

    name = "classification"
    losses = ("cross_entropy",)

    def loss(self, model, output, y):
        aux = [a for a in output[1:] if a is not None] if isinstance(output, tuple) else []
        ce = F.cross_entropy(main_output(output).float(), y, label_smoothing=self.label_smoothing)
        parts = {"cross_entropy": ce}
        if aux:
            parts["aux"] = sum(F.cross_entropy(a.float(), y, label_smoothing=self.label_smoothing) for a in aux)
            return ce + model.aux_loss_weight * parts["aux"], parts
        return ce, parts

    def evaluation_loss(self, model, output, y):
        """Plain cross-entropy, without label smoothing: the figure that compares across runs."""
        ce = F.cross_entropy(main_output(output).float(), y)
        return ce, {"cross_entropy": ce}

    def score(self, output, y):
        correct = (main_output(output).argmax(1) == y).sum()
        return {"correct": correct, "count": y.numel()}

    def metrics(self, sums):
        return {"acc": int(sums["correct"]) / int(sums["count"])}

    output_dims, per = 2, "per image"  # scores (N, K), one class per image

    def wrong_output(self, out: Tensor, y: Tensor, data) -> str:
        return (f"{data.name} has one class per image, so the model must output scores of shape "
                f"(N, {len(data.classes)}); it outputs {tuple(out.shape)}. A model that scores "
                "every pixel needs a segmentation data set (cnn_book.data.SegmentationData)")

    def check(self, output, y, data):
        if hasattr(output, "mu"):  # a VAEOutput: a generative model on labelled data
            raise ValueError(f"{data.name} is labelled for a {self.name} model, and this model (a VAE) models the "
                             "images themselves: train it on cnn_book.data.binarize(data)")
        out = main_output(output)
        if out.dim() != self.output_dims:
            raise ValueError(self.wrong_output(out, y, data))
        if out.shape[1] != len(data.classes):
            n = len(data.classes)
            raise ValueError(f"the model scores {out.shape[1]} classes {self.per} but {data.name} has {n} "
                             f"classes (labels 0 to {n - 1}): build the model with num_classes={n}")

    def epoch_line(self, train, test):
        return f"train acc {train['acc']:.1%}  test acc {test['acc']:.1%}"

    def summary_line(self, test):
        return f"test accuracy {test['acc']:.2%}"


class Segmentation(Classification):
    """A class for every pixel: logits (N, K, H, W) against masks (N, H, W), cropped to the output
    when it is smaller (``dense_targets``). Accuracy counts pixels; the mean IoU averages
    TP / (TP + FP + FN) over the classes present, from the summed confusion matrix. On held-out
    data the loss is the per-pixel cross-entropy alone: Dice is a statistic of a whole batch, and
    would change with the size of the evaluation batches."""

    name = "segmentation"
    losses = ("cross_entropy", "dice", "cross_entropy+dice")
    eval_batch_size = 200  # per-pixel maps are large: smaller evaluation batches than a classifier's

    def random_batch(self, n, input_shape, classes, device="cpu"):
        x = torch.randn(n, *input_shape, device=device)
        return x, torch.randint(0, classes, (n, *input_shape[1:]), device=device)  # a class per pixel

    def loss(self, model, output, y):
        logits = main_output(output)
        y = dense_targets(logits, y)
        parts = {}
        if "cross_entropy" in self.loss_name:
            parts["cross_entropy"] = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        if "dice" in self.loss_name:
            parts["dice"] = dice_loss(logits, y)
        return sum(parts.values()), parts

    def evaluation_loss(self, model, output, y):
        logits = main_output(output)
        return super().evaluation_loss(model, logits, dense_targets(logits, y))

    def score(self, output, y):
        logits = main_output(output)
        k = logits.shape[1]
        y = dense_targets(logits, y)
        return {"confusion": confusion_matrix(logits.argmax(1), y, k)}

    def metrics(self, sums):
        scores = SegmentationScores([], sums["confusion"].cpu(), float("nan"))
        return {"acc": scores.pixel_accuracy, "miou": scores.mean_iou}

    output_dims, per = 4, "per pixel"  # scores (N, K, H, W), one class per pixel

    def wrong_output(self, out, y, data):
        return (f"{data.name} has a class for every pixel (masks of {tuple(y.shape[-2:])}), so the "
                f"model must output (N, {len(data.classes)}, H, W); it outputs {tuple(out.shape)}, "
                "one score per image: a classifier, not a segmentation model")

    def check(self, output, y, data):
        super().check(output, y, data)
        out = main_output(output)
        if data.train_x.shape[-2:] != data.train_y.shape[-2:]:
            raise ValueError(f"{data.name}'s masks are {tuple(data.train_y.shape[-2:])} but its images are "
                             f"{tuple(data.train_x.shape[-2:])}: every pixel needs a class")
        if out.shape[-2] > y.shape[-2] or out.shape[-1] > y.shape[-1]:
            raise ValueError(f"the model outputs {tuple(out.shape[-2:])} maps but the masks are only "
                             f"{tuple(y.shape[-2:])}: there is no class for the extra pixels")

    def epoch_line(self, train, test):
        return f"{super().epoch_line(train, test)}  test mIoU {test['miou']:.3f}"

    def summary_line(self, test):
        return f"test pixel accuracy {test['acc']:.2%} | test mIoU {test['miou']:.3f}"

    def results(self, curves):
        return {"test_miou": curves["test_miou"][-1]}  # test_acc is the pixel accuracy


class Generative(Task):
    """A model of the images themselves (the VAE): the target is the input, the output a
    ``VAEOutput`` (logits, mu, logvar, z). The loss is reconstruction + beta * KL, both summed over
    an image's pixels and latents and averaged over images (``models.vae.negative_elbo``); ``loss=``
    names the likelihood of a pixel, "bernoulli" (0/1 pixels) or "continuous_bernoulli" (grey levels).
    Held-out data are scored with beta = 1 whatever ``beta`` trains with: the negative ELBO in nats
    per image, an upper bound on -log p(x) that compares across runs."""

    name = "generative"
    losses = ("bernoulli", "continuous_bernoulli")

    def __init__(self, loss: str | None = None, label_smoothing: float = 0.0, beta: float = 1.0) -> None:
        super().__init__(loss)
        if label_smoothing:
            raise ValueError("label_smoothing is for class labels; a generative task has none")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise ValueError(f"beta must be a number of at least 0, got {beta!r}")
        self.beta = float(beta)
        self.variational = True  # until ``check`` sees the model's output

    def loss(self, model, output, x):
        from .models.vae import negative_elbo

        loss, rec, kl = negative_elbo(output, x, self.beta, self.loss_name)
        return loss, {"reconstruction": rec, "kl": kl}

    def evaluation_loss(self, model, output, x):
        from .models.vae import negative_elbo

        loss, rec, kl = negative_elbo(output, x, 1.0, self.loss_name)
        return loss, {"reconstruction": rec, "kl": kl}

    def random_batch(self, n, input_shape, classes, device="cpu"):
        x = torch.randint(0, 2, (n, *input_shape), device=device).float()  # 0/1 pixels
        return x, x

    def score(self, output, x):
        return {}  # the loss and its parts are the figures

    def metrics(self, sums):
        return {}

    def check(self, output, x, data):
        fields = ("logits", "mu", "logvar")
        if not all(hasattr(output, f) for f in fields):
            raise ValueError(f"{data.name} is for a generative model, whose output holds logits, mu and logvar "
                             f"(a VAEOutput, as get_model('vae') returns); this model returns "
                             f"{type(output).__name__}")
        self.variational = output.logvar is not None  # a plain autoencoder's output has no log-variance
        if output.logits.shape != x.shape:
            raise ValueError(f"the model decodes images of {tuple(output.logits.shape[1:])} but {data.name}'s are "
                             f"{tuple(x.shape[1:])}")
        if self.loss_name == "bernoulli" and not ((x == 0) | (x == 1)).all():
            raise ValueError(f"a Bernoulli likelihood is for pixels that are 0 or 1, and {data.name} has grey "
                             "levels: binarise them (cnn_book.data.binarize) or use loss='continuous_bernoulli'. "
                             "Plain binary cross-entropy on grey levels is not a log-likelihood")
        if ((x < 0) | (x > 1)).any():
            raise ValueError(f"{data.name}'s pixels must lie in [0, 1] for a likelihood of pixels; they range "
                             f"from {x.min().item():.3g} to {x.max().item():.3g} (normalised images?)")

    def epoch_line(self, train, test):
        if not self.variational:
            return f"reconstruction {train['reconstruction']:.1f}  test {test['loss']:.2f} nats"
        return (f"reconstruction {train['reconstruction']:.1f} + KL {train['kl']:.1f}  "
                f"test -ELBO {test['loss']:.2f} nats")

    def summary_line(self, test):
        if not self.variational:  # no KL term: the loss is no bound on -log p(x)
            return f"test reconstruction {test['loss']:.2f} nats per image (a plain autoencoder: no KL, no ELBO)"
        return (f"test negative ELBO {test['loss']:.2f} nats per image "
                f"(reconstruction {test['reconstruction']:.2f} + KL {test['kl']:.2f})")

    def results(self, curves):
        return {"test_nelbo": curves["test_loss"][-1]}  # no accuracy: the negative ELBO, nats per image


class Detection(Task):
    """Boxes on YOLO v1's grid: outputs and targets are (N, S, S, 5B + C). The loss is the paper's,
    with its four parts (``models.yolo.yolo_loss``). On held-out data each image's grid is decoded to
    detections (class-specific scores, class-wise NMS at IoU 0.5) and scored with torchmetrics'
    MeanAveragePrecision at COCO's own thresholds (``models.yolo.coco_map``): mAP@[.5:.95] and
    mAP@0.5. The truth is read from the grid targets the batches carry, so a box that its cell could
    not hold (a second centre) is not counted; the chapter scores against every box
    (``DetectionData.targets``). Training batches are not decoded: their mAP would cost more than
    the step, and the epoch line reports the test figures."""

    name = "detection"
    losses = ("yolo",)
    eval_batch_size = 200

    def __init__(self, loss: str | None = None, label_smoothing: float = 0.0, num_boxes: int = 2) -> None:
        super().__init__(loss)
        if label_smoothing:
            raise ValueError("label_smoothing is for class labels; YOLO v1's class scores are regressed")
        self.num_boxes = num_boxes  # B, boxes per cell (the data's, once ``check`` has seen it)
        self.map = None  # the held-out images' mAP, a torchmetrics metric (made when first needed)

    def loss(self, model, output, target):
        from .models.yolo import yolo_loss

        return yolo_loss(output, target, getattr(model, "num_boxes", self.num_boxes))

    def score(self, output, target):
        """Held-out images update the task's mAP metric (torchmetrics' ``MeanAveragePrecision``, which
        also gathers the images of every process under torchrun); the sums count them."""
        if output.requires_grad:  # a training step
            return {}
        from .models.yolo import detections, truths

        b = self.num_boxes
        if self.map is None:
            from .models.yolo import coco_map

            self.map = coco_map()
        self.map.update([detections(g, num_boxes=b) for g in output], [truths(t, num_boxes=b) for t in target])
        return {"images": len(output)}

    def metrics(self, sums):
        """mAP@[.5:.95] and mAP@0.5 of the images scored since the last call (then it starts again)."""
        if "images" not in sums or self.map is None:
            return {}
        r = self.map.compute()
        self.map.reset()
        # torchmetrics (COCO's evaluation) gives -1 when the images hold no box at all: undefined, not a score
        return {k: float(r[key]) if float(r[key]) >= 0 else math.nan for k, key in (("map", "map"),
                                                                                     ("map50", "map_50"))}

    def check(self, output, target, data):
        if not isinstance(output, Tensor) or output.dim() != 4:
            got = getattr(output, "shape", type(output).__name__)
            raise ValueError(f"{data.name} is for a detector, whose output is a grid (N, S, S, 5B + C), as "
                             f"get_model('yolov1') returns; this model returns {got}")
        if output.shape != target.shape:
            raise ValueError(f"the model predicts grids of {tuple(output.shape[1:])} but {data.name}'s targets are "
                             f"{tuple(target.shape[1:])}: build it with the data's grid, boxes per cell and "
                             f"num_classes={len(data.classes)}")
        self.num_boxes = getattr(data, "num_boxes", self.num_boxes)

    def random_batch(self, n, input_shape, classes, device="cpu"):
        from .models.yolo import encode

        size = input_shape[-1]
        box = torch.tensor([[size * 0.2, size * 0.3, size * 0.6, size * 0.8]])
        target = torch.stack([encode(box, torch.tensor([i % classes]), size, 7, 2, classes)[0] for i in range(n)])
        return torch.randn(n, *input_shape, device=device), target.to(device)

    def epoch_line(self, train, test):
        return f"test mAP@0.5 {_score(test['map50'])}  mAP@[.5:.95] {_score(test['map'])}"

    def summary_line(self, test):
        return f"test mAP@0.5 {_score(test['map50'])} | COCO mAP@[.5:.95] {_score(test['map'])}"

    def results(self, curves):
        return {"test_map50": curves["test_map50"][-1], "test_map": curves["test_map"][-1]}


class LanguageModel(Task):
    """A token to predict at every position: logits (N, T, vocab) against targets (N, T), where -100
    marks a position without a target (``text.IGNORE``: the unmasked tokens of BERT's inputs, so
    that the loss counts masked positions only). The same task serves GPT (every position predicts
    the next token) and BERT (the masked positions predict what was there): what differs is the
    data. Cross-entropy in nats per predicted token; on held-out data also bits per token
    (cross-entropy / ln 2, per character for a character model) and the share predicted right."""

    name = "language_model"
    losses = ("cross_entropy",)
    eval_batch_size = 256

    def loss(self, model, output, y):
        ce = F.cross_entropy(output.flatten(0, 1).float(), y.flatten(), ignore_index=-100,
                             label_smoothing=self.label_smoothing)
        return ce, {"cross_entropy": ce}

    def score(self, output, y):
        counted = y != -100
        sums = {"correct": ((output.argmax(-1) == y) & counted).sum(), "count": counted.sum()}
        if not output.requires_grad:  # held-out data: the exact loss per token, for bits per token
            sums["nll"] = F.cross_entropy(output.flatten(0, 1).float(), y.flatten(), ignore_index=-100,
                                          reduction="sum")
        return sums

    def metrics(self, sums):
        count = max(int(sums["count"]), 1)
        out = {"acc": int(sums["correct"]) / count}
        if "nll" in sums:
            out["bits"] = float(sums["nll"]) / count / math.log(2)
        return out

    def check(self, output, y, data):
        if not isinstance(output, Tensor) or output.dim() != 3:
            got = getattr(output, "shape", type(output).__name__)
            raise ValueError(f"{data.name} is for a language model, whose output scores every token of the "
                             f"vocabulary at every position, (N, T, vocab), as get_model('gpt2') and "
                             f"get_model('bert') return; this model returns {tuple(got) if got else got}")
        if output.shape[:2] != y.shape:
            raise ValueError(f"the model scores {tuple(output.shape[:2])} positions but {data.name}'s targets are "
                             f"{tuple(y.shape)}")
        if output.shape[-1] != data.vocab_size:
            raise ValueError(f"the model scores {output.shape[-1]} tokens but {data.name}'s vocabulary has "
                             f"{data.vocab_size}: build the model with vocab_size={data.vocab_size}")

    def random_batch(self, n, input_shape, classes, device="cpu"):
        ids = torch.randint(0, classes, (n, *input_shape), device=device)
        return ids, ids.roll(-1, dims=1)  # classes: the vocabulary's size

    def epoch_line(self, train, test):
        return f"test loss {test['loss']:.3f} ({test['bits']:.3f} bits/token)  test acc {test['acc']:.1%}"

    def summary_line(self, test):
        return (f"test loss {test['loss']:.3f} nats/token = {test['bits']:.3f} bits/token | "
                f"test token accuracy {test['acc']:.2%}")

    def results(self, curves):
        return {"test_bits": curves["test_bits"][-1]}  # test_acc is the share of tokens predicted right


class MaskedLanguageModel(LanguageModel):
    """BERT's pre-training, scored where it is trained: the model is asked for the masked positions
    only (``forward``: ``model(x, masked_positions=target != -100)``, logits (M, vocab) for the M
    masked tokens of the batch, ``BertForMaskedLM``'s option), not for all N x T. The figures are
    the same as ``LanguageModel``'s over the full logits; the vocabulary-sized matrix product and
    softmax run for 15 % of the positions (Cramming's sparse prediction, Geiping & Goldstein 2022)."""

    name = "masked_language_model"

    def forward(self, model, x, y):
        try:
            return model(x, masked_positions=y != -100)
        except TypeError as e:  # a model without the option (GPT, a reader's own)
            if "masked_positions" not in str(e):
                raise
            name = getattr(model, "name", type(model).__name__)
            raise ValueError(f"masked-token data is scored at its masked positions only: the model must take "
                             f"masked_positions= (N, T), True where a token was masked, as get_model('bert') "
                             f"does; {name} does not") from e

    def random_batch(self, n, input_shape, classes, device="cpu"):
        ids = torch.randint(0, classes, (n, *input_shape), device=device)
        chosen = torch.rand(ids.shape, device=device) < 0.15
        chosen[:, 0] = True  # at least one target in every sequence
        return ids, ids.masked_fill(~chosen, -100)

    def loss(self, model, output, y):
        return super().loss(model, output[None], y[y != -100][None])

    def score(self, output, y):
        return super().score(output[None], y[y != -100][None])

    def check(self, output, y, data):
        m = int((y != -100).sum())
        if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[0] != m:
            got = getattr(output, "shape", type(output).__name__)
            raise ValueError(f"{data.name} is scored at its masked positions only: the model must take "
                             f"masked_positions= (N, T), True where a token was masked, and return scores of "
                             f"shape (masked tokens, vocab), ({m}, {data.vocab_size}) here, as "
                             f"get_model('bert') does; this model returns {tuple(got) if got else got}")
        super().check(output[None], y[y != -100][None], data)


TASKS: dict[str, type[Task]] = {t.name: t for t in (Classification, Segmentation, Generative, Detection,
                                                      LanguageModel, MaskedLanguageModel)}


def _score(v: float) -> str:
    """A mAP as printed: three decimals, or "undefined" when there was no box to find."""
    return "undefined (no boxes)" if math.isnan(v) else f"{v:.3f}"
