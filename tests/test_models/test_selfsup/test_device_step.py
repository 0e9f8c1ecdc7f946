"""A full GreenMIM training step on a non-CPU device, audited op by op.

Runs on the meta device (no GPU here): masks and grouping plans are made on
the host, the step (loss, backward, AdamW) on ``meta``. A dispatch mode
records every op and checks the properties a GPU step needs: no
data-dependent op on the device (each one makes the host wait for the GPU),
no blocking host-to-device copy, no CPU tensor mixed into a device op.
"""
import pytest
import torch
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401
from greenmim_mm.analysis import StepAudit

SWIN = dict(
    type='GreenSwinTransformer',
    arch=dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4]))
SVT = dict(
    type='GreenSVT',
    arch=dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 1, 2],
              num_heads=[1, 2, 2, 4], patch_sizes=[4, 2, 2, 2],
              strides=[4, 2, 2, 2], mlp_ratios=[4, 4, 4, 4],
              sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
    norm_after_stage=[False, False, False, True])


def _model(backbone, in_channels):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='GreenMIM', mask_ratio=0.75, backbone=backbone,
        neck=dict(type='GreenMIMDecoder', in_channels=in_channels,
                  embed_dims=64, num_heads=4),
        head=dict(type='GreenMIMHead', norm_pix=True, patch_size=32,
                  loss=dict(type='PixelReconstructionLoss',
                            criterion='L2'))))
    model.init_weights()
    return model


@pytest.mark.parametrize('backbone,width', [(SWIN, 256), (SVT, 48)],
                         ids=['swin', 'svt'])
def test_training_step_on_device_has_no_sync_and_no_blocking_copy(
        backbone, width):
    model = _model(backbone, width).train()
    model.to('meta')  # parameters on a device without data
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    imgs = torch.empty(4, 3, 224, 224, device='meta')
    # the first step fills per-grid caches (one non-blocking copy each);
    # in a warm step every copy comes before the encoder's first kernel
    audits = [StepAudit('meta'), StepAudit('meta', late_copies=True)]
    for audit in audits:
        with audit:
            loss = model.loss(imgs, None)['loss']
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert audit.device_ops > 100  # the step really ran on the device
        assert audit.problems == []
    assert loss.device.type == 'meta' and loss.shape == ()


def test_audit_catches_a_sync_and_a_blocking_copy():
    """The audit is not blind: the faults it looks for are reported."""
    audit = StepAudit('meta', late_copies=True)
    x = torch.empty(4, device='meta')
    with audit:
        _ = x + torch.ones(4).to('meta')  # blocking copy
        _ = x + torch.ones(4).to('meta', non_blocking=True)  # late copy
        _ = x[torch.tensor([0, 2])]  # CPU index into a device tensor
        try:
            torch.empty(3, device='meta').nonzero()
        except (NotImplementedError, RuntimeError):
            pass  # meta has no data: the op was still dispatched
    kinds = ' | '.join(audit.problems)
    assert 'blocking host-to-device copy' in kinds
    assert 'CPU tensor' in kinds
    assert 'data-dependent op' in kinds
    assert 'after the first device computation' in kinds
    assert all(n >= 1 for n in audit.counts().values()), audit.counts()


def test_decoder_position_embedding_is_cached_per_grid():
    model = _model(SWIN, 256)
    x = torch.randn(2, 12, 256)
    pos = model.neck.pos_embed((7, 7), x)
    assert model.neck.pos_embed((7, 7), x) is pos
    assert model.neck.pos_embed((7, 9), x).shape == (1, 63, 64)
