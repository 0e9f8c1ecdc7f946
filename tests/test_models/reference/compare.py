"""Float64 comparison of a masked path against a dense reference: forward,
the gradient of every parameter and of the image. Model-agnostic (takes
modules and callables); imports nothing from greenmim_mm."""
from typing import Callable, List, Sequence

import torch
from torch import Tensor, nn

from .inputs import unit_grid
from .order import pick_tokens, valid_map


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


def assert_all_close64(outs: Sequence[Tensor], expected: Sequence[Tensor],
                       what: str, rtol: float = 1e-9):
    """:func:`assert_close64` for every pair of two equally long lists."""
    assert len(outs) == len(expected), \
        f'{what}: {len(outs)} outputs, expected {len(expected)}'
    for i, (o, e) in enumerate(zip(outs, expected)):
        assert_close64(o, e, f'{what}, output {i}', rtol)


def assert_negative_controls(outs: Sequence[Tensor], good: Sequence[Tensor],
                             broken: dict, min_diff: float = 1e-3):
    """The masked path equals the good reference and differs from every
    broken one.

    Args:
        outs (Sequence[Tensor]): The masked path's outputs.
        good (Sequence[Tensor]): The reference's outputs.
        broken (dict): ``{what: (outputs, stages)}``: a broken reference's
            outputs and the stages at which they must differ by more than
            ``min_diff``.
        min_diff (float): Defaults to 1e-3.
    """
    assert_all_close64(outs, good, 'good reference')
    for what, (bad, stages) in broken.items():
        for i in stages:
            err = (outs[i] - bad[i]).abs().max().item()
            assert err > min_diff, f'{what}: stage {i} differs by {err:.2e}'


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


def audit_masked(model: nn.Module, dense: nn.Module, reference: Callable,
                 img: Tensor, mask: Tensor, unit: int = 32) -> List[Tensor]:
    """:func:`audit` of ``model(img, mask)`` against ``reference(dense,
    img, mask)``, the pixels of the masked units hidden.

    Args:
        model: The model whose masked path is tested.
        dense: A dense-class copy of the weights, for the reference.
        reference: ``reference(dense, img, mask) -> outs``.
        img (Tensor): ``(B, 3, H, W)`` float64.
        mask (Tensor): ``(B, Hu * Wu)`` bool, 1 = masked.
        unit (int): Mask unit side in pixels. Defaults to 32.

    Returns:
        list[Tensor]: The masked path's outputs.
    """
    return audit(model, lambda m, x: m(x, mask), dense,
                 lambda m, x: reference(m, x, mask), img,
                 valid_map(mask, unit_grid(img.shape[-2:], unit), unit))


def assert_nothing_masked_is_dense(model: nn.Module, dense: nn.Module,
                                   img: Tensor, unit: int = 32):
    """With nothing masked, the masked path's tokens are the dense model's
    maps, token for token (float64 rounding).

    Args:
        model: The model whose masked path is tested.
        dense: The dense parent with the same weights.
        img (Tensor): ``(B, 3, H, W)`` float64.
        unit (int): Mask unit side in pixels. Defaults to 32.
    """
    grid = unit_grid(img.shape[-2:], unit)
    mask = torch.zeros(img.shape[0], grid[0] * grid[1], dtype=torch.bool)
    with torch.no_grad():
        got = model(img, mask)
        expect = dense(img)
    assert_all_close64(got, [pick_tokens(e, mask, grid) for e in expect],
                       'vs dense parent')


def assert_bitwise_equal(a, b):
    """Two :func:`run_with_grads` results are equal to the bit: every
    output, every parameter gradient (None alike), the image gradient."""
    (oa, ga, ia, _), (ob, gb, ib, _) = a, b
    assert len(oa) == len(ob)
    for i, (x, y) in enumerate(zip(oa, ob)):
        assert torch.equal(x, y), f'output {i}'
    assert ga.keys() == gb.keys()
    for n in ga:
        assert (ga[n] is None) == (gb[n] is None), n
        assert ga[n] is None or torch.equal(ga[n], gb[n]), f'grad of {n}'
    assert torch.equal(ia, ib), 'image grad'
