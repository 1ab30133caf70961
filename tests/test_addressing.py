"""Invariants of the pure addressing functions shared by the content-addressed memories."""

import pytest
import torch
from torch.nn import functional as F

from pgtm.memories.addressing import (
    circular_convolution,
    content_weights,
    cosine_similarity,
    erase_add_write,
    interpolate,
    sharpen,
)


def test_cosine_similarity_matches_torch_and_broadcasts_leading_dims():
    torch.manual_seed(0)
    keys = torch.randn(2, 3, 4, 5)  # [..., R, W]
    memory = torch.randn(3, 6, 5)  # [..., N, W], broadcasts against keys' (2, 3)
    similarity = cosine_similarity(keys, memory)
    assert similarity.shape == (2, 3, 4, 6)
    expected = F.cosine_similarity(keys.unsqueeze(-2), memory.unsqueeze(-3), dim=-1)
    torch.testing.assert_close(similarity, expected, atol=1e-5, rtol=1e-5)


def test_zero_keys_and_zero_memory_give_zero_similarity_uniform_weights_finite_gradients():
    keys = torch.zeros(2, 3, 4, requires_grad=True)
    memory = torch.zeros(2, 5, 4, requires_grad=True)
    strengths = torch.full((2, 3), 10.0, requires_grad=True)
    assert (cosine_similarity(keys, memory) == 0).all()
    weights = content_weights(keys, strengths, memory)
    torch.testing.assert_close(weights, torch.full((2, 3, 5), 0.2))
    (weights * torch.randn(2, 3, 5)).sum().backward()
    for tensor in (keys, memory, strengths):
        assert torch.isfinite(tensor.grad).all()


def test_content_weights_are_distributions_and_peak_on_the_matching_row():
    torch.manual_seed(1)
    memory = torch.randn(4, 7, 6)
    keys = memory[:, [2, 5]]  # [4, R=2, W]
    weights = content_weights(keys, torch.full((4, 2), 1e3), memory)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2))
    assert (weights.argmax(-1) == torch.tensor([2, 5])).all()


def test_one_hot_read_of_the_row_equal_to_the_key():
    """Key = row 3, large beta, g = 1, no shift, large gamma: the read is row 3 itself."""
    torch.manual_seed(2)
    memory = torch.randn(2, 8, 5)
    keys = memory[:, 3:4]  # [2, 1, 5]
    previous = torch.softmax(torch.randn(2, 1, 8), -1)
    no_shift = torch.tensor([0.0, 1.0, 0.0]).expand(2, 1, 3)
    weights = content_weights(keys, torch.full((2, 1), 100.0), memory)
    weights = interpolate(weights, previous, torch.ones(2, 1))
    weights = circular_convolution(weights, no_shift)
    weights = sharpen(weights, torch.full((2, 1), 50.0))
    torch.testing.assert_close(weights, F.one_hot(torch.full((2, 1), 3), 8).float())
    torch.testing.assert_close(weights @ memory, keys)


def test_batched_shift_equals_per_example_roll():
    torch.manual_seed(3)
    weights = torch.softmax(torch.randn(4, 2, 6), -1)  # [B, R, N]
    offsets = torch.tensor([[-1, 0], [1, 1], [0, -1], [2, -2]])  # per example and head
    shift = F.one_hot(offsets + 2, 5).float()  # S = 5: offsets -2..2
    shifted = circular_convolution(weights, shift)
    for b in range(4):
        for r in range(2):
            expected = torch.roll(weights[b, r], int(offsets[b, r]), dims=-1)
            torch.testing.assert_close(shifted[b, r], expected)
    # a soft shift is the mixture of the rolls
    soft = torch.softmax(torch.randn(4, 2, 3), -1)
    rolls = torch.stack([torch.roll(weights, o, dims=-1) for o in (-1, 0, 1)], -1)
    torch.testing.assert_close(
        circular_convolution(weights, soft), (rolls * soft[..., None, :]).sum(-1)
    )


def test_sharpen_matches_the_power_formula_and_is_safe_at_zero():
    torch.manual_seed(4)
    weights = torch.softmax(torch.randn(3, 5, dtype=torch.float64), -1)
    gamma = 1 + torch.rand(3, dtype=torch.float64) * 4
    powered = weights ** gamma[:, None]
    expected = powered / powered.sum(-1, keepdim=True)
    torch.testing.assert_close(sharpen(weights, gamma), expected, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(sharpen(weights, torch.ones(3, dtype=torch.float64)), weights)
    zeros = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    gamma = torch.tensor([1e4, 3.0], requires_grad=True)
    sharpened = sharpen(zeros, gamma)
    (sharpened * torch.randn(2, 4)).sum().backward()
    assert torch.isfinite(sharpened).all() and torch.isfinite(zeros.grad).all()
    assert torch.isfinite(gamma.grad).all()
    torch.testing.assert_close(sharpened[0], torch.tensor([0.0, 0.0, 1.0, 0.0]))


def test_erase_add_write_by_hand_and_with_broadcast_leading_dims():
    memory = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # N=3, W=2
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])  # H=2
    erase = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    add = torch.tensor([[10.0, 20.0], [2.0, 4.0]])
    expected = torch.tensor(
        [
            # row 0: * (1 - [1, 0]) * (1 - [.5, .5]) + [10, 20] + [1, 2]
            [1 * 0 * 0.5 + 10 + 1, 2 * 1 * 0.5 + 20 + 2],
            # row 1: * (1 - [.5, .5]) + [1, 2]
            [3 * 0.5 + 1, 4 * 0.5 + 2],
            [5.0, 6.0],
        ]
    )
    torch.testing.assert_close(erase_add_write(memory, weights, erase, add), expected)
    torch.manual_seed(5)
    memory = torch.randn(4, 1, 5, 3)  # [B, 1, N, W]
    weights = torch.softmax(torch.randn(2, 4, 1, 2, 5), -1)  # [K, B, 1, H, N]
    erase, add = torch.rand(4, 1, 2, 3), torch.randn(2, 4, 1, 2, 3)
    written = erase_add_write(memory, weights, erase, add)
    assert written.shape == (2, 4, 1, 5, 3)
    for k in range(2):
        for b in range(4):
            single = erase_add_write(memory[b, 0], weights[k, b, 0], erase[b, 0], add[k, b, 0])
            torch.testing.assert_close(written[k, b, 0], single)


def test_gradcheck_float64():
    torch.manual_seed(6)
    options = {"dtype": torch.float64, "requires_grad": True}
    keys, memory = torch.randn(2, 3, 4, **options), torch.randn(2, 5, 4, **options)
    strengths, gate = torch.rand(2, 3, **options), torch.rand(2, 3, **options)
    previous, shift = torch.rand(2, 3, 5, **options), torch.rand(2, 3, 3, **options)
    gamma = (1 + torch.rand(2, 3, dtype=torch.float64)).requires_grad_()
    erase, add = torch.rand(2, 3, 4, **options), torch.randn(2, 3, 4, **options)

    def step(keys, strengths, memory, previous, gate, shift, gamma, erase, add):
        weights = content_weights(keys, strengths, memory)
        weights = sharpen(circular_convolution(interpolate(weights, previous, gate), shift), gamma)
        return erase_add_write(memory, weights, erase, add)

    inputs = (keys, strengths, memory, previous, gate, shift, gamma, erase, add)
    assert torch.autograd.gradcheck(step, inputs, fast_mode=True)


def test_bad_shapes_raise_value_errors():
    with pytest.raises(ValueError, match="keys"):
        cosine_similarity(torch.randn(2, 3, 4), torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="strengths"):
        content_weights(torch.randn(2, 3, 4), torch.randn(2, 2), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="shift"):
        circular_convolution(torch.rand(2, 5), torch.rand(2, 2))
    with pytest.raises(ValueError, match="erase"):
        erase_add_write(torch.randn(5, 4), torch.rand(2, 5), torch.rand(3, 4), torch.rand(2, 4))
    with pytest.raises(ValueError, match="weights"):
        erase_add_write(torch.randn(5, 4), torch.rand(2, 6), torch.rand(2, 4), torch.rand(2, 4))
