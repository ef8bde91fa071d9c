"""YOLO's data and grid: a detection set from Fashion-MNIST (deterministic per index, splits kept
apart, tight boxes) and the grid encoding, checked as the inverse of the decoding."""

import dataclasses

import pytest
import torch

from cnn_book.data import DetectionData, ImageData, fashion_mnist_detection
from cnn_book.models.yolo import decode, encode


@pytest.fixture(scope="module")
def small(fmnist):
    return fashion_mnist_detection(fmnist, n_train=40, n_test=20, seed=3)


def test_a_canvas_depends_on_its_index_only(fmnist, small):
    more = fashion_mnist_detection(fmnist, n_train=60, n_test=5, seed=3)
    assert torch.equal(more.train_x[:40], small.train_x) and torch.equal(more.test_x, small.test_x[:5])
    assert all(torch.equal(a, b) for a, b in zip(more.train_boxes[:40], small.train_boxes, strict=True))
    other = fashion_mnist_detection(fmnist, n_train=40, n_test=0, seed=4)
    assert not torch.equal(other.train_x, small.train_x)


def test_counts_sizes_and_classes(small):
    assert isinstance(small, DetectionData) and small.task == "detection"
    assert small.train_x.shape == (40, 1, 112, 112) and small.train_y.shape == (40, 7, 7, 20)
    counts = [len(b) for b in small.train_boxes]
    assert min(counts) >= 1 and max(counts) <= 4
    for boxes, labels in zip(small.train_boxes, small.train_labels, strict=True):
        assert boxes.shape == (len(labels), 4) and (boxes[:, 2:] > boxes[:, :2]).all()
        assert boxes.min() >= 0 and boxes.max() <= 112 and labels.max() < 10


def test_train_canvases_hold_training_items_and_test_canvases_test_items(fmnist):
    n = 50
    marked = ImageData("marked", fmnist.classes, torch.full((n, 1, 28, 28), 100, dtype=torch.uint8),
                       torch.arange(n) % 10, torch.full((n, 1, 28, 28), 200, dtype=torch.uint8),
                       torch.arange(n) % 10, (0.5,), (0.5,))
    d = fashion_mnist_detection(marked, n_train=10, n_test=10)
    assert set(d.train_x.unique().tolist()) <= {0, 100} and set(d.test_x.unique().tolist()) <= {0, 200}


def test_a_box_is_tight_around_its_item(fmnist):
    d = fashion_mnist_detection(fmnist, n_train=30, n_test=0, items=(1, 1), seed=1)
    for img, boxes in zip(d.train_x, d.train_boxes, strict=True):
        ys, xs = torch.nonzero(img[0] > 25, as_tuple=True)
        assert boxes.tolist() == [[xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]]


@pytest.mark.parametrize("cap", [0.0, 0.2])
def test_no_two_boxes_overlap_by_more_than_the_cap(fmnist, cap):
    from torchvision.ops import box_iou

    d = fashion_mnist_detection(fmnist, n_train=60, n_test=0, items=(3, 4), max_overlap=cap, seed=2)
    worst = max(box_iou(b, b).fill_diagonal_(0).max().item() for b in d.train_boxes)
    assert worst <= cap and (cap == 0 or worst > 0)  # the cap is reached, never passed
    free = fashion_mnist_detection(fmnist, n_train=60, n_test=0, items=(3, 4), max_overlap=1.0, seed=2)
    assert max(box_iou(b, b).fill_diagonal_(0).max().item() for b in free.train_boxes) > 0.2


def _sort(boxes):
    return torch.argsort(boxes[:, 0] * 10_000 + boxes[:, 1])


def test_the_grid_targets_are_the_boxes_encoded_and_decode_back(small):
    for target, boxes, labels in zip(small.train_y, small.train_boxes, small.train_labels, strict=True):
        again, dropped = encode(boxes, labels, 112, 7, 2, 10)
        assert torch.equal(again, target)
        if dropped == 0:
            b, s, lab = decode(target, 112, 2, threshold=0.5, first_only=True)
            got, want = _sort(b), _sort(boxes)
            assert torch.allclose(b[got], boxes[want], atol=1e-4) and torch.equal(lab[got], labels[want])
            assert (s == 1).all()


def test_encode_and_decode_are_inverses_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        cells = torch.randperm(49, generator=g)[: int(torch.randint(1, 8, (1,), generator=g))]
        cx = (cells % 7 + torch.rand(len(cells), generator=g) * 0.98 + 0.01) * 32  # 224 / 7 = 32 px cells
        cy = (cells // 7 + torch.rand(len(cells), generator=g) * 0.98 + 0.01) * 32
        w, h = torch.rand(2, len(cells), generator=g) * 60 + 4
        half_w = torch.minimum(w / 2, torch.minimum(cx, 224 - cx))  # inside the image
        half_h = torch.minimum(h / 2, torch.minimum(cy, 224 - cy))
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1)
        labels = torch.randint(0, 20, (len(cells),), generator=g)
        target, dropped = encode(boxes, labels, 224, 7, 2, 20)
        assert target.shape == (7, 7, 30) and dropped == 0
        b, _, lab = decode(target, 224, 2, threshold=0.5, first_only=True)
        assert len(b) == len(boxes)
        for box, label in zip(boxes, labels, strict=True):
            match = (b - box).abs().max(1).values < 1e-3
            assert match.sum() == 1 and lab[match].item() == label.item()
        both, _, _ = decode(target, 224, 2, threshold=0.5)
        assert len(both) == 2 * len(boxes)  # a target's B slots are copies


def test_two_centres_in_one_cell_show_the_one_object_per_cell_limit(fmnist):
    d = fashion_mnist_detection(fmnist, n_train=20, n_test=0, items=(2, 2), two_in_one_cell=True, seed=2)
    assert d.dropped["train"] == 20  # every canvas loses its second object in the grid target
    plain = fashion_mnist_detection(fmnist, n_train=20, n_test=0, items=(2, 2), seed=2)
    assert plain.dropped["train"] < 20


def test_bad_input_is_refused(fmnist, small):
    with pytest.raises(ValueError, match="must be a multiple of the grid"):
        fashion_mnist_detection(fmnist, n_train=1, n_test=1, canvas=100)
    with pytest.raises(ValueError, match=r"boxes must be \(K, 4\)"):
        encode(torch.zeros(3), torch.zeros(3, dtype=torch.long), 112)
    with pytest.raises(ValueError, match="x1 < x2"):
        encode(torch.tensor([[10.0, 10, 5, 20]]), torch.tensor([1]), 112)
    with pytest.raises(ValueError, match=r"labels must lie in 0 \.\. 9"):
        encode(torch.tensor([[1.0, 1, 5, 5]]), torch.tensor([10]), 112)
    with pytest.raises(ValueError, match="resizing would move its boxes"):
        small.with_input(size=224)
    with pytest.raises(ValueError, match="augment=False"):
        next(small.batches("train", 4, augment=True))
    x, y = next(small.batches("train", 4))
    assert x.shape == (4, 1, 112, 112) and y.shape == (4, 7, 7, 20)


# --- the network and the loss --------------------------------------------------------------------

from cnn_book.inspect import count_parameters  # noqa: E402
from cnn_book.models import get_model  # noqa: E402
from cnn_book.models.yolo import YOLOv1, cell_iou, yolo_loss  # noqa: E402


def test_the_paper_s_network_has_24_convolutions_and_its_parameters_add_up():
    with torch.device("meta"):  # 272 M parameters: shapes and counts only
        paper = YOLOv1()
        out = paper(torch.zeros(1, 3, 448, 448))
    assert out.shape == (1, 7, 7, 30)
    convs = [m for m in paper.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 24
    # Figure 3 as (kernel, in, out): 7x7x64-s-2, 3x3x192, then the 1x1 reductions and 3x3 convolutions
    figure3 = [(7, 3, 64), (3, 64, 192), (1, 192, 128), (3, 128, 256), (1, 256, 256), (3, 256, 512),
               *[(1, 512, 256), (3, 256, 512)] * 4, (1, 512, 512), (3, 512, 1024),
               *[(1, 1024, 512), (3, 512, 1024)] * 2, (3, 1024, 1024), (3, 1024, 1024),
               (3, 1024, 1024), (3, 1024, 1024)]
    conv_params = sum(k * k * i * o + o for k, i, o in figure3)
    fc1, fc2 = 7 * 7 * 1024 * 4096 + 4096, 4096 * 7 * 7 * 30 + 7 * 7 * 30
    assert count_parameters(paper) == conv_params + fc1 + fc2 == 271_703_550
    assert fc1 == 205_524_992 and fc1 / count_parameters(paper) > 0.75  # most of it in the first FC layer


def test_fast_yolo_has_9_convolutions_and_darknet_s_head():
    with torch.device("meta"):
        fast = YOLOv1(variant="fast")
        assert fast(torch.zeros(1, 3, 448, 448)).shape == (1, 7, 7, 30)
    widths = [m.out_channels for m in fast.features if isinstance(m, torch.nn.Conv2d)]
    assert widths == [16, 32, 64, 128, 256, 512, 1024, 1024, 1024]
    convs = sum(9 * i * o + o for i, o in zip([3, *widths[:-1]], widths, strict=True))
    head = (50_176 * 256 + 256) + (256 * 4096 + 4096) + (4096 * 1470 + 1470)
    assert count_parameters(fast) == convs + head


def test_the_small_form_has_the_same_head_and_output_layout():
    small = get_model("yolov1", variant="small", num_classes=10, in_channels=1)
    assert small.input_shape == (1, 112, 112)
    assert small(torch.zeros(2, 1, 112, 112)).shape == (2, 7, 7, 20)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 112, 112\)"):
        small(torch.zeros(1, 1, 96, 96))


def test_cell_iou_is_torchvision_s_box_iou_box_by_box():
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(7, 7, 4, generator=g), torch.rand(7, 7, 4, generator=g)
    rows, cols = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")

    def xyxy(t):
        cx, cy = (cols + t[..., 0]) / 7, (rows + t[..., 1]) / 7
        return torch.stack([cx - t[..., 2] / 2, cy - t[..., 3] / 2, cx + t[..., 2] / 2, cy + t[..., 3] / 2], -1)

    want = box_iou(xyxy(a).view(-1, 4), xyxy(b).view(-1, 4)).diagonal().view(7, 7)
    assert torch.allclose(cell_iou(a, b, 7), want, atol=1e-6)


def _case():
    """One 224x224 image with one object centred in cell (row 4, column 3); a prediction equal to the target."""
    target, _ = encode(torch.tensor([[70.0, 100, 130, 160]]), torch.tensor([4]), 224, 7, 2, 20)
    pred = target.clone().unsqueeze(0)
    pred[0, 4, 3, 5:10] = torch.tensor([0.5, 0.5, 0.05, 0.05, 0.0])  # the second predictor: a small box, IoU 0.03
    return pred, target.unsqueeze(0)


def test_a_perfect_prediction_costs_nothing():
    pred, target = _case()
    loss, parts = yolo_loss(pred, target)
    assert loss.item() == 0 and all(v.item() == 0 for v in parts.values())


def test_the_coordinate_term_weighs_x_y_and_the_square_roots_of_w_h_by_lambda_coord():
    pred, target = _case()
    pred[0, 4, 3, 0] += 0.1  # x of the responsible predictor
    pred[0, 4, 3, 2] = target[0, 4, 3, 2] * 1.44  # w: sqrt grows by 1.2
    _, parts = yolo_loss(pred, target)
    sqrt_w = target[0, 4, 3, 2].sqrt()
    assert torch.isclose(parts["coord"], 5 * (0.1**2 + (0.2 * sqrt_w) ** 2))


def test_the_confidence_target_is_the_iou_not_one():
    pred, target = _case()
    pred[0, 4, 3, 2] = target[0, 4, 3, 2] / 2  # half as wide: IoU 0.5
    _, parts = yolo_loss(pred, target)
    assert torch.isclose(parts["object"], torch.tensor((1 - 0.5) ** 2))


def test_the_responsible_predictor_is_the_one_with_the_higher_iou_and_the_other_pays_no_object():
    pred, target = _case()
    pred[0, 4, 3, 2] = target[0, 4, 3, 2] / 2  # predictor 0: IoU 0.5
    pred[0, 4, 3, 5:10] = torch.cat([target[0, 4, 3, :4], torch.tensor([0.8])])  # predictor 1: the exact box
    # predictor 1 is now responsible (IoU 1 > 0.5); predictor 0's confidence of 1 is charged as no-object
    _, parts = yolo_loss(pred, target)
    assert torch.isclose(parts["object"], torch.tensor((0.8 - 1.0) ** 2))
    assert torch.isclose(parts["no_object"], torch.tensor(0.5 * 1.0**2))  # predictor 0's conf 1, lambda 0.5
    assert parts["coord"].item() == 0  # the responsible box is exact


def test_empty_cells_pay_lambda_noobj_for_every_predictor_and_classes_count_only_where_an_object_is():
    pred, target = _case()
    pred[0, 0, 0, 4] = pred[0, 0, 0, 9] = 0.6  # an empty cell, both predictors
    pred[0, 0, 0, 10:] = 0.3  # class scores in an empty cell: not charged
    pred[0, 4, 3, 10 + 4] = 0.5  # the object's class probability off by 0.5
    _, parts = yolo_loss(pred, target)
    assert torch.isclose(parts["no_object"], torch.tensor(0.5 * 2 * 0.36))
    assert torch.isclose(parts["class"], torch.tensor(0.25))


def test_the_loss_is_per_image_averaged_over_the_batch_and_trains():
    pred, target = _case()
    pred[0, 0, 0, 4] = 0.6
    one, _ = yolo_loss(pred, target)
    two, _ = yolo_loss(torch.cat([pred, pred]), torch.cat([target, target]))
    assert torch.isclose(one, two)
    torch.manual_seed(0)
    net = get_model("yolov1", variant="small", num_classes=20, in_channels=1)
    x = torch.rand(4, 1, 112, 112)
    t = torch.stack([encode(torch.tensor([[10.0, 20, 60, 90]]), torch.tensor([i]), 112, 7, 2, 20)[0]
                     for i in range(4)])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    first = None
    for _ in range(30):
        loss, _ = yolo_loss(net(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


# --- detections, average precision and the task through fit -------------------------------------

from cnn_book import train  # noqa: E402
from cnn_book.models.yolo import average_precision, detections, interpolated, precision_recall, truths  # noqa: E402


def _random_detections(seed, n_images=30, classes=3):
    """Ground truths and noisy detections of them (some missed, some spurious), as torchmetrics takes them."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(n_images):
        k = int(torch.randint(1, 5, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 0.7
        wh = torch.rand(k, 2, generator=g) * 0.25 + 0.1  # wider than the jitter: boxes stay valid
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, classes, (k,), generator=g)
        jitter = (torch.rand(k, 4, generator=g) - 0.5) * 0.08
        found = torch.rand(k, generator=g) > 0.2
        extra = int(torch.randint(0, 3, (1,), generator=g))
        exy = torch.rand(extra, 2, generator=g) * 0.7
        pb = torch.cat([(boxes + jitter)[found], torch.cat([exy, exy + 0.1], 1)])
        pl = torch.cat([labels[found], torch.randint(0, classes, (extra,), generator=g)])
        ps = torch.rand(len(pb), generator=g)
        preds.append({"boxes": pb, "scores": ps, "labels": pl})
        targets.append({"boxes": boxes, "labels": labels})
    return preds, targets


def _coco_ap50(preds, targets, classes):
    """Per-class AP at IoU 0.5 by pycocotools' COCOeval itself (101 recall points, up to 100 detections)."""
    import contextlib
    import io

    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    anns, dets = [], []
    for i, t in enumerate(targets):
        for b, lab in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": lab, "bbox": xywh(b),
                         "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
    for i, p in enumerate(preds):
        for b, lab, sc in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist(), strict=True):
            dets.append({"image_id": i, "category_id": lab, "bbox": xywh(b), "score": sc})
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(len(targets))], "annotations": anns,
                  "categories": [{"id": c} for c in range(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        e = COCOeval(gt, gt.loadRes(dets), "bbox")
        e.params.iouThrs = np.array([0.5])
        e.evaluate()
        e.accumulate()
    return [float(e.eval["precision"][0, :, c, 0, -1].mean()) for c in range(classes)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_book_s_average_precision_equals_coco_s(seed):
    import numpy as np

    from cnn_book.models.yolo import coco_map

    preds, targets = _random_detections(seed)
    ours = [average_precision(preds, targets, c, 0.5, points=101) for c in range(3)]
    coco = _coco_ap50(preds, targets, 3)
    assert ours == pytest.approx(coco, abs=1e-9)
    m = coco_map(iou_thresholds=[0.5], class_metrics=True)  # the task's metric, at IoU 0.5 only
    m.update(preds, targets)
    assert m.compute()["map_per_class"].tolist() == pytest.approx(coco, abs=1e-6)  # float32 results
    assert m.rec_thresholds == np.linspace(0, 1, 101).tolist()  # pycocotools' own points
    assert coco_map().iou_thresholds == np.linspace(0.5, 0.95, 10).tolist()
    every = [average_precision(preds, targets, c, 0.5) for c in range(3)]  # VOC's: every recall step
    assert all(abs(a - b) < 0.03 for a, b in zip(every, ours, strict=True))


def test_torchmetrics_own_recall_points_are_float32_and_move_ap():
    """Why coco_map passes the thresholds: torchmetrics 1.9's defaults come from torch.linspace in
    float32, so a recall of exactly 7/100 (say) misses the point 0.07 it reaches in pycocotools."""
    from torchmetrics.detection import MeanAveragePrecision

    default = MeanAveragePrecision(iou_type="bbox", iou_thresholds=[0.5], class_metrics=True)
    assert default.rec_thresholds[7] == float(torch.tensor(0.07)) != 0.07
    preds, targets = _random_detections(0)
    default.update(preds, targets)
    gap = (default.compute()["map_per_class"] - torch.tensor(_coco_ap50(preds, targets, 3))).abs().max()
    assert 1e-3 < gap < 0.01  # on these detections: 0.0055 for class 2


def test_average_precision_on_a_case_worked_by_hand():
    truth = [{"boxes": torch.tensor([[0.0, 0, 1, 1], [2, 2, 3, 3]]), "labels": torch.tensor([0, 0])}]
    # best first: a hit, a miss, the second hit -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    pred = [{"boxes": torch.tensor([[0.0, 0, 1, 1], [5, 5, 6, 6], [2, 2, 3, 3]]),
             "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0])}]
    assert average_precision(pred, truth, 0) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(pred, truth, 1) != average_precision(pred, truth, 1)  # no box of class 1: NaN
    recall, precision = precision_recall(pred, truth, 0)
    assert recall.tolist() == [0.5, 0.5, 1.0] and precision.tolist() == pytest.approx([1, 0.5, 2 / 3])
    assert interpolated(precision).tolist() == pytest.approx([1, 2 / 3, 2 / 3])  # the best at this recall or beyond
    twice = [{"boxes": torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1]]), "scores": torch.tensor([0.9, 0.8]),
              "labels": torch.tensor([0, 0])}]
    assert precision_recall(twice, truth, 0)[1].tolist() == [1.0, 0.5]  # a box found twice: one false positive


def test_detections_suppress_duplicates_and_truths_read_the_target():
    target, _ = encode(torch.tensor([[10.0, 20, 60, 90], [70, 10, 100, 40]]), torch.tensor([1, 3]), 112, 7, 2, 10)
    t = truths(target, size=112)
    assert len(t["boxes"]) == 2 and sorted(t["labels"].tolist()) == [1, 3]
    d = detections(target, size=112, threshold=0.5)  # each cell's two slots are the same box: NMS keeps one
    assert len(d["boxes"]) == 2 and (d["scores"] == 1).all()


def test_the_detection_task_trains_through_fit_and_reports_map(fmnist, capsys):
    data = fashion_mnist_detection(fmnist, n_train=256, n_test=64, seed=5)
    torch.manual_seed(0)
    model = get_model("yolov1", variant="small", num_classes=10, in_channels=1)
    hist = train.fit(model, data, epochs=2, batch_size=32, lr=1e-3, weight_decay=0.0, device="cpu")
    assert hist.task == "detection" and len(hist["test_map50"]) == 2 and 0 <= hist["test_map50"][-1] <= 1
    for part in ("coord", "object", "no_object", "class"):
        assert len(hist.curves[f"train_{part}"]) == 2
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    out = capsys.readouterr().out
    assert "test mAP@0.5" in out and "COCO mAP@[.5:.95]" in out and "train images/s" in out
    with pytest.raises(ValueError, match="is for a detector, whose output is a grid"):
        train.fit(get_model("simple_cnn", input_size=112), data, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="build it with the data's grid"):
        train.fit(get_model("yolov1", variant="small", num_classes=20, in_channels=1), data, epochs=1, device="cpu")


# --- a real set: NEON tree crowns, in Pascal VOC XML ---------------------------------------------

from cnn_book.data import DataError, neon_trees, read_voc  # noqa: E402


def _voc(folder, stem, size, boxes, name="Tree"):
    """An image and its VOC annotation in the deepforest wheel's format, made here."""
    from PIL import Image

    pixels = (torch.arange(size[0] * size[1] * 3) % 251).to(torch.uint8).view(size[1], size[0], 3)
    Image.fromarray(pixels.numpy()).save(folder / f"{stem}.png")
    objects = "".join(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                      f"<difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                      f"<ymax>{d}</ymax></bndbox></object>" for a, b, c, d in boxes)
    (folder / f"{stem}.xml").write_text(
        f"<annotation><folder>RGB</folder><filename>{stem}.tif</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size><segmented>0</segmented>{objects}</annotation>")


def test_voc_annotations_are_read_and_tiled_with_their_boxes(tmp_path):
    _voc(tmp_path, "a", (448, 224), [(10, 20, 50, 60), (200, 100, 260, 150), (400, 10, 440, 40)])
    _voc(tmp_path, "b", (224, 224), [(0, 0, 30, 30)])
    name, boxes, names = read_voc(tmp_path / "a.xml")
    assert name == "a.tif" and boxes.tolist()[1] == [200, 100, 260, 150] and names == ["Tree"] * 3
    # the .tif named in the XML is not there: the .png is read
    data = neon_trees(tmp_path, tile=224, files={"train": "a", "test": "b"})
    assert isinstance(data, DetectionData) and data.classes == ["tree"]
    assert data.train_x.shape == (3, 3, 112, 112) and data.test_x.shape == (1, 3, 112, 112)  # stride 112, then 224
    b, lab = data.boxes("train", 0)  # tile 0: the first box whole, the second cut at x = 224: 24/60 inside, left out
    assert b.tolist() == [[5, 10, 25, 30]] and lab.tolist() == [0]
    mid, _ = data.boxes("train", 1)  # the tile from x = 112: the second box whole, halved
    assert mid.tolist() == [[44, 50, 74, 75]]
    assert data.test_y.shape == (1, 7, 7, 11) and data.test_y[0, 0, 0, 4] == 1  # 5B + 1 class
    assert data.train_x[1].float().mean() != data.train_x[0].float().mean()  # different crops
    with pytest.raises(DataError, match="not a readable Pascal VOC"):
        read_voc(tmp_path / "missing.xml")


def test_the_neon_images_come_from_the_deepforest_wheel():
    data = neon_trees()
    assert data.train_x.shape == (1720, 3, 112, 112) and data.test_x.shape == (99, 3, 112, 112)
    assert data.dropped == {"train": 1, "test": 0}
    from cnn_book import recipes

    assert recipes.DATASETS["neon_trees"][2] == len(data.train_x)


def test_the_yolo_recipe_builds_its_canvases_at_its_size(fmnist, monkeypatch):
    import cnn_book.data
    from cnn_book import recipes

    cpu, gpu = recipes.RECIPES["yolo"]["cpu"], recipes.RECIPES["yolo"]["gpu"]
    assert cpu.input_shape == (1, 112, 112) and gpu.input_shape == (1, 448, 448)
    asked = []  # what the recipe asks the canvas builder for; it builds 3 test canvases instead of 1,000

    def builder(data, **options):
        asked.append(options)
        return fashion_mnist_detection(data, **{**options, "n_test": 3})

    monkeypatch.setattr(cnn_book.data, "fashion_mnist_detection", builder)
    small = dataclasses.replace(gpu, train_images=3)
    monkeypatch.setenv("CNN_BOOK_QUICK", "0")
    data = small.prepare(fmnist)
    assert data.train_x.shape == (3, 1, 448, 448) and data.train_y.shape == (3, 7, 7, 20)
    sides = torch.cat([b[:, 2:] - b[:, :2] for b in data.train_boxes])
    assert sides.max() > 28 * 1.5  # the items are drawn larger on the larger canvas
    assert recipes.get("yolo_trees", "cpu").input_shape == (3, 112, 112)
    monkeypatch.setenv("CNN_BOOK_QUICK", "1")  # builds only the training canvases quick mode trains on
    dataclasses.replace(cpu, train_images=600).prepare(fmnist)
    assert asked[-1]["n_train"] == DetectionData.quick_limit == 512 and "n_test" not in asked[-1]  # all 1,000


def test_detect_runs_the_model_and_found_marks_the_boxes_a_detection_hits(fmnist):
    from cnn_book.models.yolo import detect, found

    data = fashion_mnist_detection(fmnist, n_train=8, n_test=6, seed=7)
    truth = data.targets("test")
    assert len(truth) == 6 and all(set(t) == {"boxes", "labels"} for t in truth)
    assert torch.equal(truth[2]["boxes"], data.test_boxes[2])

    class Oracle(torch.nn.Module):  # returns each canvas's own grid target: a perfect detector
        num_boxes = 2

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.seen = 0

        def forward(self, x):
            out = data.test_y[self.seen : self.seen + len(x)] + 0 * self.w
            self.seen += len(x)
            return out

    preds = detect(Oracle(), data, batch_size=4)
    assert len(preds) == 6
    kept = [t["boxes"] for t in (truths(g, size=112) for g in data.test_y)]
    for p, k in zip(preds, kept, strict=True):  # the boxes the grid holds, once each after NMS
        assert len(p["boxes"]) == len(k) and torch.allclose(p["boxes"].sort(0).values, k.sort(0).values, atol=1e-4)
    hits = found(preds, truth)
    assert all(h.all() for h, t in zip(hits, kept, strict=True) if len(t) == len(h))
    wrong = [{**p, "labels": (p["labels"] + 1) % 10} for p in preds]  # right boxes, wrong classes
    assert not any(h.any() for h in found(wrong, truth))
    low = [{**p, "scores": p["scores"] * 0.1} for p in preds]
    assert not any(h.any() for h in found(low, truth, min_score=0.25))


def test_the_detection_plots_draw(fmnist):
    import matplotlib

    matplotlib.use("Agg")
    from cnn_book import plot

    data = fashion_mnist_detection(fmnist, n_train=4, n_test=4, seed=1)
    truth = data.targets("test")
    preds = [{**t, "scores": torch.full((len(t["boxes"]),), 0.9)} for t in truth]
    preds[0] = {k: v[:1] for k, v in preds[0].items()}  # image 0: one item found, the others missed
    fig = plot.detections(data.test_x, truth, preds, data.classes, titles=list("abcd"))
    assert len([ax for ax in fig.axes if ax.images]) == 4
    key = fig.axes[0].get_xlabel()  # under image 0: its items, found or not, and its detections
    names = [data.classes[int(k)] for k in truth[0]["labels"]]
    assert key.startswith(f"truth: 1 {names[0]} ✓") and key.count("✗") == len(names) - 1
    assert f"found: a {names[0]} 0.90" in key.replace("\n  ", " ")
    tags = [t.get_text() for t in fig.axes[0].texts]
    assert tags == [str(j + 1) for j in range(len(names))] + ["a"]  # a tag on each box, none overprinted
    bare = plot.detections(data.test_x, truth, preds, data.classes, labels=False)
    assert not bare.axes[0].get_xlabel() and not bare.axes[0].texts  # boxes only
    assert plot.precision_recall(preds, truth, [0, 1], data.classes).axes
    assert plot.responsible_cells(data.test_x[0], truth[0]["boxes"], 7).axes[0].patches
    grid = data.test_y[0].clone()  # a perfect prediction: the target itself
    fig = plot.grid_view(data.test_x[0], grid, data.classes, truth=truth[0])
    boxes, cells, final = fig.axes[:3]
    assert len(boxes.patches) == 2 * len(truth[0]["boxes"])  # confidence 1 in both slots, 0 elsewhere
    assert len(cells.patches) == 49 and cells.get_legend() is not None
    assert final.get_xlabel().count("✓") == len(truth[0]["boxes"])
    unsure = plot.grid_view(data.test_x[0], torch.zeros_like(grid), data.classes).axes[1]  # an untrained net
    assert unsure.get_legend() is None and "no cell" in unsure.get_xlabel()
    counts = {"all": {"correct": 6, "localization": 2, "similar": 1, "other": 0, "background": 1}}
    bars = plot.error_breakdown(counts).axes[0]
    assert [round(p.get_width(), 2) for p in bars.patches] == [0.6, 0.2, 0.1, 0.0, 0.1]


def test_every_box_is_scored_for_every_class_as_the_paper_scores_it():
    grid = torch.zeros(7, 7, 13)  # B = 2, C = 3
    grid[3, 4, :5] = torch.tensor([0.5, 0.5, 0.2, 0.3, 0.8])  # predictor 1: confidence 0.8
    grid[3, 4, 10:] = torch.tensor([0.5, 0.3, 0.2])  # the cell's class probabilities
    grid[0, 0, 9], grid[0, 0, 10] = -0.5, -0.5  # two negative outputs do not make a score
    boxes, scores, labels = decode(grid, 112, 2, threshold=0.1)
    assert labels.tolist() == [0, 1, 2] and scores.tolist() == pytest.approx([0.4, 0.24, 0.16])
    assert (boxes == boxes[0]).all()  # one box, once per class
    assert decode(grid, 112, 2, threshold=0.2)[2].tolist() == [0, 1]


def test_quick_mode_trains_and_tests_detection_on_512_canvases(fmnist, monkeypatch, capsys):
    """A detection step costs far more than a classification one: quick mode caps it at 512 canvases
    (the chapter must run in a minute under nbval), not at the 1,024 images of the other tasks."""
    data = fashion_mnist_detection(fmnist, n_train=600, n_test=600, seed=1)
    monkeypatch.setenv("CNN_BOOK_QUICK", "1")
    torch.manual_seed(0)
    model = get_model("yolov1", variant="small", num_classes=10, in_channels=1)
    hist = train.fit(model, data, epochs=1, batch_size=64, lr=1e-3, device="cpu")
    assert data.quick_limit == 512 and hist.train_images == 512
    assert "on 512 training images, tested on 500" in capsys.readouterr().out.replace("\n  ", " ")  # folded lines


def test_the_error_breakdown_sorts_hand_made_detections_as_the_yolo_paper_does():
    from cnn_book.models.yolo import ERRORS, error_breakdown

    box = lambda x0, y0, x1, y1: [float(x0), float(y0), float(x1), float(y1)]  # noqa: E731
    targets = [{"boxes": torch.tensor([box(0, 0, 10, 10), box(20, 20, 30, 30)]), "labels": torch.tensor([0, 2])},
               {"boxes": torch.tensor([box(0, 0, 10, 10)]), "labels": torch.tensor([1])}]
    preds = [
        {"boxes": torch.tensor([box(0, 0, 10, 10),    # class 0 on its object: correct
                                box(0, 0, 10, 10),    # class 0 again, the same object: localization (a duplicate)
                                box(20, 20, 30, 30),  # class 1 on a class-2 object, 1 and 2 similar: similar
                                box(50, 50, 60, 60)]),  # class 2 on nothing: background
         "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([0, 0, 1, 2])},
        {"boxes": torch.tensor([box(0, 0, 10, 10), box(4, 4, 12, 12)]),  # class 0 on a class-1 object: other
         "scores": torch.tensor([0.95, 0.5]), "labels": torch.tensor([0, 1])},  # class 1, IoU 0.3: localization
    ]
    counts = error_breakdown(preds, targets, num_classes=3, similar=[{1, 2}])
    # class 0 has 1 object: only its top detection (0.95, image 1 on the class-1 object) counts -> other
    # class 1 has 1 object: its top detection, 0.7 (image 0, on the class-2 object) -> similar
    # class 2 has 1 object: its only detection, 0.6 on nothing -> background
    assert counts == {"correct": 0, "localization": 0, "similar": 1, "other": 1, "background": 1}
    assert list(counts) == list(ERRORS)
    preds[1]["scores"] = torch.tensor([0.1, 0.99])  # now class 1's top is image 1's: IoU 0.32 -> localization
    targets[0]["labels"] = torch.tensor([0, 0])  # class 0 has 2 objects: its two best detections count
    counts = error_breakdown(preds, targets, num_classes=3, similar=[{1, 2}])
    assert counts["correct"] == 1 and counts["localization"] == 2  # the duplicate, and class 1's
    by_class = [error_breakdown(preds, targets, 3, [{1, 2}], labels=[c]) for c in range(3)]
    assert by_class[1] == {**dict.fromkeys(ERRORS, 0), "localization": 1}  # class 1's one detection
    assert {k: sum(c[k] for c in by_class) for k in ERRORS} == counts  # the classes add up
