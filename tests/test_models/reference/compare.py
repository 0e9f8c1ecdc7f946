"""Float64 comparison of a masked path against a dense reference: forward,
the gradient of every parameter and of the image. Model-agnostic (takes
modules and callables); imports nothing from greenmim_mm."""
from typing import Callable, List, Sequence

import torch
from torch import Tensor, nn


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Make every weight non-trivial: bias tables random, norm weights away
    from 1, every bias and other weight shifted (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if 'relative_position_bias_table' in name:
                p.copy_(noise * 0.5)
            elif 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith('bias'):
                p.copy_(0.1 * noise)
            else:
                p.add_(0.02 * noise)
    return model


def twin_copies(make: Callable[[], nn.Module], make_dense: Callable[[],
                nn.Module], seed: int = 0):
    """A perturbed float64 model and a dense-class copy of its weights."""
    torch.manual_seed(seed)
    model = perturb(make(), seed).double()
    dense = make_dense().double()
    dense.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    dense.eval()
    return model, dense


def weighted_loss(outs: Sequence[Tensor], weights: Sequence[Tensor]) -> Tensor:
    """A random weighting of every stage's output."""
    assert len(outs) == len(weights)
    return sum((o * w).sum() for o, w in zip(outs, weights))


def run_with_grads(model: nn.Module, fn: Callable, img: Tensor,
                   weights: Sequence[Tensor] = None, seed: int = 1):
    """``fn(model, img) -> outs``; returns (outs, {name: grad}, image grad,
    weights used)."""
    model.zero_grad(set_to_none=True)
    x = img.detach().clone().requires_grad_(True)
    outs = fn(model, x)
    if weights is None:
        gen = torch.Generator().manual_seed(seed)
        weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype)
                   for o in outs]
    weighted_loss(outs, weights).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return [o.detach() for o in outs], grads, x.grad, weights


def assert_close64(a: Tensor, b: Tensor, what: str, rtol: float = 1e-9):
    """Equal up to float64 rounding: |a - b| <= rtol * max|b| (+ tiny)."""
    assert a.shape == b.shape, f'{what}: shape {a.shape} != {b.shape}'
    scale = b.abs().max().item() if b.numel() else 0.
    err = (a - b).abs().max().item() if b.numel() else 0.
    assert err <= rtol * scale + 1e-12, \
        f'{what}: max error {err:.3e} (scale {scale:.3e})'


def audit(model: nn.Module, masked: Callable, dense: nn.Module,
          reference: Callable, img: Tensor, pixel_visible: Tensor
          ) -> List[Tensor]:
    """Masked path vs reference in float64: every output, every parameter
    gradient, the image gradient; masked pixels get exactly zero gradient.

    Args:
        model: The model whose masked path is tested.
        masked: ``masked(model, img) -> outs`` (visible tokens).
        dense: A dense-class copy of the weights, for the reference.
        reference: ``reference(dense, img) -> outs`` (visible tokens).
        img (Tensor): ``(B, 3, H, W)`` float64.
        pixel_visible (Tensor): ``(B, H, W)`` bool.

    Returns:
        list[Tensor]: The masked path's outputs.
    """
    outs, grads, img_grad, weights = run_with_grads(model, masked, img)
    r_outs, r_grads, r_img_grad, _ = run_with_grads(dense, reference, img,
                                                    weights)
    assert len(outs) == len(r_outs)
    for i, (o, r) in enumerate(zip(outs, r_outs)):
        assert_close64(o, r, f'output {i}')
    assert grads.keys() == r_grads.keys()
    for name, g in grads.items():
        rg = r_grads[name]
        assert (g is None) == (rg is None), f'{name}: grad {g} vs {rg}'
        if g is not None:
            assert_close64(g, rg, f'grad of {name}')
    assert_close64(img_grad, r_img_grad, 'image grad')
    hidden = ~pixel_visible[:, None].expand_as(img_grad)
    assert torch.all(img_grad[hidden] == 0), 'masked pixels got a gradient'
    return outs
