import pytest
import torch

from greenmim_mm.models.utils import conv_on_cells, morton_offsets


@pytest.mark.parametrize('k', [2, 4, 8])
def test_conv_on_cells_equals_the_dense_conv(k):
    torch.manual_seed(k)
    conv = torch.nn.Conv2d(6, 5, k, stride=k).double()
    side = 2 * k  # a map of 2x2 cells, one cell per "unit"
    img = torch.randn(2, 6, side, side, dtype=torch.float64)
    dense = conv(img).flatten(2).transpose(1, 2)  # (B, 4, C_out) row-major
    # tokens in Morton order inside each k x k cell, cells row-major
    rc = morton_offsets(int(torch.log2(torch.tensor(k))))  # (k², 2)
    cells = [(r, c) for r in range(2) for c in range(2)]
    tok = torch.stack([img[:, :, r * k + rc[:, 0], c * k + rc[:, 1]]
                       for r, c in cells], 1)  # (B, 4, C, k²)
    x = tok.permute(0, 1, 3, 2).reshape(2, -1, 6).requires_grad_()
    out = conv_on_cells(conv, x)
    assert torch.allclose(out, dense, atol=1e-12)
    out.sum().backward()  # gradients flow to the tokens and the weight
    assert x.grad.shape == x.shape and conv.weight.grad is not None
