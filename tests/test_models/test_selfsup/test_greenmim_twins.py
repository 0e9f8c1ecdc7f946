"""GreenMIM with tiny Twins backbones: loss and gradients."""
import pytest
import torch
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401

ARCH = dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 1, 2],
            num_heads=[1, 2, 2, 4], patch_sizes=[4, 2, 2, 2],
            strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
            sr_ratios=[8, 4, 2, 1])


def _model(kind):
    arch = dict(ARCH, window_sizes=[7, 7, 7, 7]) if kind == 'GreenSVT' \
        else ARCH
    return MODELS.build(
        dict(
            type='GreenMIM',
            mask_ratio=0.75,
            backbone=dict(type=kind, arch=arch,
                          norm_after_stage=[False, False, False, True]),
            neck=dict(type='GreenMIMDecoder', in_channels=48, embed_dims=32,
                      num_heads=2),
            head=dict(type='GreenMIMHead', norm_pix=True, patch_size=32,
                      loss=dict(type='PixelReconstructionLoss',
                                criterion='L2'))))


@pytest.mark.parametrize('kind', ['GreenSVT', 'GreenPCPVT'])
def test_loss_and_gradients(kind):
    torch.manual_seed(0)
    model = _model(kind)
    model.init_weights()
    imgs = torch.randn(2, 3, 224, 224)
    loss = model.loss(imgs, None)['loss']
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    params = dict(model.named_parameters())
    for name in ('backbone.patch_embeds.0.projection.weight',
                 'backbone.position_encodings.0.proj.weight',
                 'backbone.stages.1.1.attn.sr.weight',
                 'neck.mask_token'):
        grad = params[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_extract_feat_is_dense():
    model = _model('GreenSVT').eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 224, 224))
    assert feats[-1].shape == (1, 48, 7, 7)
