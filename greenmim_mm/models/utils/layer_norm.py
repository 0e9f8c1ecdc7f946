"""LayerNorm under CUDA autocast that keeps its input in half precision.

CUDA autocast runs ``layer_norm`` in float32: a half-precision input is
cast to a float32 copy, and that copy (twice the bytes) is what the
backward keeps. The float32 copy of a float16/bfloat16 tensor holds exactly
the same values, so keeping the half-precision input and casting it again
in the backward gives the same gradients, bit for bit, for half the saved
bytes. Every transformer block has two such norms.
"""
import torch
from torch import Tensor, nn

aten = torch.ops.aten


class _LayerNormHalfInput(torch.autograd.Function):
    """``layer_norm(x.float())`` that saves ``x`` itself (see the module
    docstring); the same aten forward and backward as autocast's path."""

    @staticmethod
    def forward(ctx, x: Tensor, weight, bias, shape, eps: float) -> Tensor:
        out, mean, rstd = aten.native_layer_norm(x.float(), shape, weight,
                                                 bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.shape = shape
        return out  # float32, as autocast's layer_norm

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx, gw, gb = aten.native_layer_norm_backward(
            grad, x.float(), ctx.shape, mean, rstd, weight, bias,
            [need[0], weight is not None and need[1],
             bias is not None and need[2]])
        return (None if gx is None else gx.to(x.dtype)), gw, gb, None, None


def casts_to_float32(x: Tensor) -> bool:
    """Whether autocast would run a LayerNorm on ``x`` in float32 from a
    half-precision copy: CUDA autocast (whose policy lists ``layer_norm``
    as float32) on a float16/bfloat16 input. CPU autocast keeps
    ``layer_norm`` in the low dtype, so nothing changes there."""
    return (x.device.type == 'cuda' and x.dtype in (torch.float16,
                                                   torch.bfloat16)
            and torch.is_autocast_enabled('cuda'))


def layer_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(x)``, saving ``x`` in its own dtype under CUDA autocast.

    Args:
        norm (nn.Module): The norm layer; other than ``nn.LayerNorm`` it is
            simply called.
        x (Tensor): Its input.

    Returns:
        Tensor: ``norm(x)``, the same values and gradients as autocast's.
    """
    if not (isinstance(norm, nn.LayerNorm) and casts_to_float32(x)) or any(
            p is not None and p.dtype != torch.float32
            for p in (norm.weight, norm.bias)):
        return norm(x)
    return _LayerNormHalfInput.apply(x, norm.weight, norm.bias,
                                     list(norm.normalized_shape), norm.eps)
