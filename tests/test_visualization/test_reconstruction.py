import numpy as np
import pytest
import torch

from greenmim_mm.models import GreenMIMHead
from greenmim_mm.visualization import (GREY, denormalize_units, fixed_mask,
                                       make_panels, panel_grid, patchify,
                                       pixel_mask, reconstruct, to_uint8,
                                       unpatchify)

MEAN = torch.tensor([123.675, 116.28, 103.53])
STD = torch.tensor([58.395, 57.12, 57.375])
UNIT = 32


def _normalised(b, h, w, seed=0):
    """Normalised images of real uint8 pixels: ``(B, 3, H, W)``."""
    gen = torch.Generator().manual_seed(seed)
    pix = torch.randint(0, 256, (b, 3, h, w), generator=gen).float()
    return (pix - MEAN.view(3, 1, 1)) / STD.view(3, 1, 1), pix


def test_patchify_matches_head_and_inverts():
    imgs = torch.randn(2, 3, 64, 96)
    head = GreenMIMHead(patch_size=UNIT)
    units = patchify(imgs, UNIT)
    assert units.shape == (2, 6, UNIT * UNIT * 3)
    assert torch.equal(units, head.patchify(imgs))
    assert torch.equal(unpatchify(units, (2, 3), UNIT), imgs)
    with pytest.raises(ValueError, match='Cannot unpatchify'):
        unpatchify(units, (3, 3), UNIT)
    with pytest.raises(ValueError, match='not a multiple of the mask unit'):
        patchify(torch.zeros(1, 3, 50, 64), UNIT)


def test_denormalize_inverts_norm_pix_per_unit():
    # units differ in mean and scale
    imgs = torch.randn(2, 3, 64, 64) * torch.tensor(
        [1., 5.]).repeat_interleave(32) + torch.tensor(
            [-2., 3.]).repeat_interleave(32).view(64, 1)
    head = GreenMIMHead(patch_size=UNIT, norm_pix=True)
    target = head.construct_target(imgs)  # what the loss compares with
    back = denormalize_units(target, patchify(imgs, UNIT))
    torch.testing.assert_close(back, patchify(imgs, UNIT), atol=1e-4,
                               rtol=1e-5)
    # each unit uses its own statistics: a unit-wise affine map
    swapped = denormalize_units(target, patchify(imgs, UNIT).flip(1))
    assert not torch.allclose(swapped, patchify(imgs, UNIT), atol=1e-2)
    with pytest.raises(ValueError, match='differ in shape'):
        denormalize_units(target[:, :2], patchify(imgs, UNIT))


def test_to_uint8_undoes_preprocessor():
    inputs, pix = _normalised(2, 64, 64)
    assert torch.equal(to_uint8(inputs, MEAN, STD), pix.to(torch.uint8))


def test_pixel_mask():
    mask = torch.tensor([[1, 0, 0, 1, 1, 0]], dtype=torch.bool)
    m = pixel_mask(mask, (2, 3), 4)
    assert m.shape == (1, 1, 8, 12)
    assert m[0, 0, :4, :4].all() and not m[0, 0, :4, 4:8].any()
    assert m[0, 0, 4:, :8].all() and not m[0, 0, 4:, 8:].any()
    assert int(m.sum()) == 3 * 16
    with pytest.raises(ValueError, match='does not match'):
        pixel_mask(mask, (2, 2), 4)


def test_panels_grey_paste_and_reconstruct():
    b, h, w = 2, 64, 96
    inputs, pix = _normalised(b, h, w)
    grid = (h // UNIT, w // UNIT)
    mask = fixed_mask(b, grid, 0.5, seed=3)
    m = pixel_mask(mask, grid, UNIT).expand(-1, 3, -1, -1)
    pred = torch.randn(b, grid[0] * grid[1], UNIT * UNIT * 3)
    panels = make_panels(inputs, pred, mask, UNIT, MEAN, STD, norm_pix=True)
    assert all(p.shape == (b, 3, h, w) and p.dtype == torch.uint8
               for p in panels.values())
    orig = pix.to(torch.uint8)
    assert torch.equal(panels['original'], orig)
    # masked panel: exactly the masked units are grey, the rest untouched
    assert (panels['masked'][m] == GREY).all()
    assert torch.equal(panels['masked'][~m], orig[~m])
    # pasted: visible pixels exact, masked pixels = reconstruction
    assert torch.equal(panels['pasted'][~m], orig[~m])
    assert torch.equal(panels['pasted'][m], panels['reconstruction'][m])
    assert not torch.equal(panels['reconstruction'][m], orig[m])


def test_perfect_prediction_reconstructs_the_image():
    inputs, pix = _normalised(1, 64, 64, seed=1)
    head = GreenMIMHead(patch_size=UNIT, norm_pix=True)
    mask = fixed_mask(1, (2, 2), 0.75)
    for norm_pix in (True, False):
        pred = head.construct_target(inputs) if norm_pix else \
            patchify(inputs, UNIT)
        panels = make_panels(inputs, pred, mask, UNIT, MEAN, STD, norm_pix)
        diff = (panels['reconstruction'].int() - pix.int()).abs()
        assert int(diff.max()) <= 1
        assert int((panels['pasted'].int() - pix.int()).abs().max()) <= 1


def test_fixed_mask_is_reproducible():
    a = fixed_mask(3, (7, 7), 0.75, seed=5)
    assert torch.equal(a, fixed_mask(3, (7, 7), 0.75, seed=5))
    assert not torch.equal(a, fixed_mask(3, (7, 7), 0.75, seed=6))
    assert ((~a).sum(1) == 12).all()


def test_panel_grid_layout():
    panels = {n: torch.full((2, 3, 32, 64), i * 50, dtype=torch.uint8)
              for i, n in enumerate(('original', 'masked', 'reconstruction',
                                     'pasted'))}
    img = panel_grid(panels, gap=4, titles=False)
    assert img.shape == (2 * 32 + 3 * 4, 4 * 64 + 5 * 4, 3)
    assert img.dtype == np.uint8
    assert (img[4:36, 4 + 68:4 + 68 + 64] == 50).all()  # masked, row 0
    assert (img[40:72, 4 + 3 * 68:4 + 3 * 68 + 64] == 150).all()
    assert panel_grid(panels).shape == (14 + 2 * 32 + 3 * 4, 276, 3)


def test_reconstruct_with_a_model_keeps_its_mode():
    from mmpretrain.registry import MODELS
    model = MODELS.build(dict(
        type='GreenMIM', mask_ratio=0.75,
        data_preprocessor=dict(type='SelfSupDataPreprocessor',
                               mean=MEAN.tolist(), std=STD.tolist(),
                               to_rgb=True),
        backbone=dict(type='GreenSwinTransformer', img_size=64,
                      arch=dict(embed_dims=8, depths=[1, 1, 1, 1],
                                num_heads=[1, 1, 1, 1])),
        neck=dict(type='GreenMIMDecoder', in_channels=64, embed_dims=16,
                  num_heads=2),
        head=dict(type='GreenMIMHead', norm_pix=True)))
    model.train()
    inputs, pix = _normalised(2, 64, 64)
    mask = fixed_mask(2, (2, 2), 0.5)
    a = reconstruct(model, inputs, mask)
    assert model.training
    b = reconstruct(model, inputs, mask)
    assert torch.equal(a['reconstruction'], b['reconstruction'])
    m = pixel_mask(mask, (2, 2), UNIT).expand(-1, 3, -1, -1)
    assert torch.equal(a['pasted'][~m], pix.to(torch.uint8)[~m])
