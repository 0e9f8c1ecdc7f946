import pytest
import torch
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401

TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])


def _model(mask_ratio=0.75):
    return MODELS.build(
        dict(
            type='GreenMIM',
            mask_ratio=mask_ratio,
            backbone=dict(type='GreenSwinTransformer', arch=TINY),
            neck=dict(type='GreenMIMDecoder', in_channels=256,
                      embed_dims=64, num_heads=4),
            head=dict(type='GreenMIMHead', norm_pix=True, patch_size=32,
                      loss=dict(type='PixelReconstructionLoss',
                                criterion='L2'))))


def _smooth_images(n, size=(224, 224)):
    g = torch.Generator().manual_seed(0)
    low = torch.randn(n, 3, size[0] // 16, size[1] // 16, generator=g)
    return torch.nn.functional.interpolate(low, size=size, mode='bilinear')


def test_twenty_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = _model()
    model.init_weights()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    imgs = _smooth_images(4)
    losses = []
    for _ in range(20):
        loss = model.loss(imgs, None)['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < 0.97 * sum(losses[:3]), losses


@pytest.mark.parametrize('size', [(192, 192), (224, 288)])
def test_loss_on_other_sizes(size):
    model = _model()
    out = model.loss(_smooth_images(2, size), None)
    assert out['loss'].ndim == 0 and torch.isfinite(out['loss'])


def test_loss_covers_masked_units_only():
    """Changing the prediction of a visible unit leaves the loss as is."""
    model = _model()
    head = model.head
    imgs = _smooth_images(2)
    mask = torch.zeros(2, 49)
    mask[:, :10] = 1
    pred = torch.randn(2, 49, 32 * 32 * 3)
    base = head.loss(pred, imgs, mask)
    pred2 = pred.clone()
    pred2[:, 20:] += 5.0
    assert torch.equal(head.loss(pred2, imgs, mask), base)
    pred2[:, 3] += 5.0
    assert head.loss(pred2, imgs, mask) > base


def test_head_patchify_round_trips_non_square():
    model = _model()
    imgs = torch.randn(2, 3, 96, 160)
    patches = model.head.patchify(imgs)
    assert patches.shape == (2, 15, 32 * 32 * 3)
    assert torch.equal(model.head.unpatchify(patches, (3, 5)), imgs)


def test_extract_feat_is_dense():
    model = _model()
    model.eval()
    feats = model.extract_feat(torch.randn(1, 3, 224, 224))
    assert feats[-1].shape == (1, 256, 7, 7)


def test_bad_mask_ratio_is_rejected():
    with pytest.raises(ValueError, match='mask_ratio'):
        _model(mask_ratio=1.0)
