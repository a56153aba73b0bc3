import pytest
import torch

from sppnet.evaluation import topk_correct


def test_topk_counts_by_hand():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    assert topk_correct(scores, targets, (1, 2, 3, 5)) == [1, 1, 3, 3]


def test_topk_bad_shapes():
    with pytest.raises(ValueError, match=r"scores must be \(N, K\)"):
        topk_correct(torch.zeros(3), torch.zeros(3, dtype=torch.long))
