"""Quantizers: shapes, code indices, straight-through gradients, perplexity, no collapse."""

from __future__ import annotations

import pytest
import torch

from lapo.vq import FSQ, VectorQuantizerEMA, build_quantizer, perplexity


def test_fsq_rounds_to_levels_and_indexes_codes():
    q = FSQ(latent_dim=4, levels=5, groups=2)
    z = torch.tensor([[-1.0, -0.5, 0.0, 1.0], [0.2, 0.3, -0.2, 0.9]])
    z_q, codes, aux, stats = q(z)
    torch.testing.assert_close(z_q, torch.tensor([[-1.0, -0.5, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0]]))
    assert codes.shape == (2, 2) and codes.dtype == torch.int64
    assert codes[0, 0] == 0 + 1 * 5 and codes[0, 1] == 2 + 4 * 5  # mixed radix, digits = level index
    assert float(aux) == 0.0 and q.num_codes == 25


def test_fsq_straight_through_gradient():
    z = torch.randn(8, 4, requires_grad=True)
    FSQ(4, 5, 2)(torch.tanh(z))[0].sum().backward()
    assert z.grad is not None and (z.grad != 0).all()


def test_perplexity_is_one_when_collapsed_and_k_when_uniform():
    assert float(perplexity(torch.zeros(16, 1, dtype=torch.long), 4)) == pytest.approx(1.0)
    assert float(perplexity(torch.arange(16).view(16, 1) % 4, 4)) == pytest.approx(4.0)


def test_vq_restarts_dead_codes_instead_of_collapsing():
    torch.manual_seed(0)
    q = VectorQuantizerEMA(latent_dim=4, codebook_size=8, groups=1, decay=0.5)
    data = torch.randn(256, 4) * 3  # far from the 0.1-scale init: most codes start dead
    for _ in range(20):
        _, codes, loss, stats = q(data)
    assert float(stats["perplexity"]) > 4.0, "codebook collapsed"
    assert codes.shape == (256, 1) and loss.ndim == 0


def test_unknown_quantizer_names_the_choices():
    with pytest.raises(ValueError, match="'fsq', 'vq' or 'none'"):
        build_quantizer("rvq", 8, 5, 2, 64)
