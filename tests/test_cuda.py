"""CUDA: the ops, the detector and training on a GPU give what they give on the CPU. Every test
is marked ``cuda`` and skips with its reason where no CUDA device is present (CI never has one;
``benchmarks/gpu.sh`` runs them where one is lent)."""

import numpy as np
import pytest
import torch

from sppnet.ops import batched_nms, spp_pool, spp_roi_pool

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")]


def _windows(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5]) + 8
    return torch.cat([torch.zeros(n, 1), xy, (xy + wh).minimum(torch.tensor([w, h]))], 1)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_window_pooling_on_cuda_equals_the_cpu(mode):
    feats = torch.randn(1, 64, 43, 57)
    rois = _windows(500, 688, 917)
    cpu = spp_roi_pool(feats, rois, mode=mode)
    gpu = spp_roi_pool(feats.cuda(), rois.cuda(), mode=mode)
    assert gpu.device.type == "cuda"
    if mode == "max":
        assert torch.equal(gpu.cpu(), cpu)
    else:
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_window_pooling_backward_on_cuda():
    feats = torch.randn(1, 16, 20, 25, dtype=torch.float64)
    rois = _windows(40, 320, 400)
    g = torch.randn(40, 16 * 50, dtype=torch.float64)
    grads = []
    for dev in ("cpu", "cuda"):
        f = feats.to(dev).requires_grad_()
        (spp_roi_pool(f, rois.to(dev)) * g.to(dev)).sum().backward()
        grads.append(f.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0])


def test_whole_image_pyramid_and_mixed_sizes_on_cuda():
    x = torch.randn(3, 32, 13, 17)
    sizes = torch.tensor([[13, 17], [10, 9], [7, 13]])
    torch.testing.assert_close(spp_pool(x.cuda(), (6, 3, 2, 1)).cpu(), spp_pool(x, (6, 3, 2, 1)))
    torch.testing.assert_close(spp_pool(x.cuda(), (4, 2, 1), image_sizes=sizes.cuda()).cpu(),
                               spp_pool(x, (4, 2, 1), image_sizes=sizes))


def test_batched_nms_on_cuda_keeps_the_cpu_boxes():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(3000, 2, generator=g) * 400
    boxes = torch.cat([xy, xy + torch.rand(3000, 2, generator=g) * 150 + 1], 1)
    scores, labels = torch.rand(3000, generator=g), torch.randint(0, 20, (3000,), generator=g)
    want = batched_nms(boxes, scores, labels, 0.3)
    got = batched_nms(boxes.cuda(), scores.cuda(), labels.cuda(), 0.3)
    assert got.cpu().tolist() == want.tolist()


def test_detector_on_cuda_gives_the_cpu_detections():
    from sppnet.detection.bbox_reg import BoxRegressor
    from sppnet.detection.detector import InferenceSettings, SPPDetector
    from sppnet.detection.features import BackboneSpec
    from sppnet.detection.head import DetectionHead
    from tests.detection.fakes import EdgeTrunk

    torch.manual_seed(0)
    d = 8 * 50
    head = DetectionHead(d, 2, 32)
    svms = {"fc7": (torch.randn(32, 2), torch.zeros(2), 1.0)}
    reg = BoxRegressor(torch.randn(2, d, 4) * 1e-3, torch.zeros(2, 4), 1.0)
    det = SPPDetector(EdgeTrunk(), BackboneSpec(model="edge"), head, ["a", "b"],
                      InferenceSettings(scales=(224,)), svms, reg)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (180, 240, 3), dtype=np.uint8)
    boxes = _windows(300, 180, 240)[:, 1:].numpy()
    want = det.detect(image, boxes)
    got = det.to("cuda").detect(image, boxes)
    assert got.boxes.device.type == "cpu"  # results come back on the CPU
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.boxes, want.boxes, rtol=1e-4, atol=1e-2)


def test_train_cls_on_cuda(tmp_path):
    from PIL import Image

    from sppnet.cli.main import main

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (60, 70, 3), dtype=np.uint8)).save(
                tmp_path / "data" / c / f"{i}.png")
    assert main(["train-cls", "--data", str(tmp_path / "data"), "--output-dir",
                 str(tmp_path / "run"), "--model", "zf5_spp", "--width-mult", "0.25",
                 "--fc-dim", "16", "--resize", "56", "--sizes", "48", "--split", "6,2,None",
                 "--batch-size", "4", "--epochs", "1", "--device", "cuda", "--full-image",
                 "--no-progress"]) == 0
