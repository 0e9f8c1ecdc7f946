"""LayerNorm that keeps a half-precision input under CUDA autocast."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from greenmim_mm.analysis import FakeCUDAMode, fake_cuda_module
from greenmim_mm.models.utils import layer_norm
from greenmim_mm.models.utils.layer_norm import _LayerNormHalfInput


def _saved(fn):
    """(dtype, shape) of every tensor autograd saves while ``fn`` runs."""
    out = []

    def pack(t):
        out.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        res = fn()
    return res, out


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_same_values_and_gradients_as_autocasts_float32_path(dtype):
    torch.manual_seed(0)
    x = (torch.randn(6, 5, 16) * 3 + 1).to(dtype).requires_grad_()
    w = torch.randn(16, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    g = torch.randn(6, 5, 16)
    # autocast's path: a float32 copy of the input, native layer norm
    ref, ref_saved = _saved(lambda: F.layer_norm(x.float(), (16, ), w, b,
                                                 1e-6))
    ref_grads = torch.autograd.grad(ref, (x, w, b), g)
    out, saved = _saved(lambda: _LayerNormHalfInput.apply(x, w, b, [16],
                                                          1e-6))
    grads = torch.autograd.grad(out, (x, w, b), g)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    for a, r in zip(grads, ref_grads):
        assert a.dtype == r.dtype and torch.equal(a, r)
    # the reference keeps a float32 copy of x, this keeps x itself
    assert (torch.float32, x.shape) in ref_saved
    assert (torch.float32, x.shape) not in saved
    assert (dtype, x.shape) in saved


def test_only_cuda_autocast_takes_the_half_input_path():
    norm = nn.LayerNorm(8)
    x = torch.randn(3, 8).half()
    with torch.autocast('cpu', torch.bfloat16):  # CPU keeps the low dtype
        assert torch.equal(layer_norm(norm, x.bfloat16()),
                           norm(x.bfloat16()))
    mode = FakeCUDAMode()
    with mode:
        fake_cuda_module(norm, mode)
        xc = mode.empty(3, 8, dtype=torch.float16, requires_grad=True)
        with FakeCUDAMode.cuda_autocast(torch.float16):
            out, saved = _saved(lambda: layer_norm(norm, xc))
            ref, ref_saved = _saved(lambda: norm(xc))  # negative control
    assert out.dtype == ref.dtype == torch.float32
    assert (torch.float32, (3, 8)) in ref_saved  # autocast's fp32 copy
    assert (torch.float32, (3, 8)) not in saved
    assert (torch.float16, (3, 8)) in saved
