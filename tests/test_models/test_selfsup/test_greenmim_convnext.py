"""GreenMIM with ConvNeXt V2 (FCMAE-style): loss on masked units, training
lowers it, and the ConvNeXt demo config trains end to end."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.models import ConvNeXt
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401
from greenmim_mm.models.utils.masking import random_unit_mask

ARCH = dict(depths=[1, 1, 2, 1], channels=[16, 24, 32, 48])
DEMO_CFG = 'greenmim_convnext-v2-tiny_1xb16-coslr-20e_demo.py'


def _model(**backbone):
    return MODELS.build(
        dict(
            type='GreenMIM',
            mask_ratio=0.6,
            backbone=dict(dict(type='GreenConvNeXt', arch=ARCH,
                               use_grn=True, layer_scale_init_value=0.,
                               out_indices=(3, ),
                               gap_before_final_norm=False), **backbone),
            neck=dict(type='GreenMIMDecoder', in_channels=48, embed_dims=32,
                      num_heads=2),
            head=dict(type='GreenMIMHead', norm_pix=True, patch_size=32,
                      loss=dict(type='PixelReconstructionLoss',
                                criterion='L2'))))


def test_loss_reaches_every_part_and_masked_pixels_stay_unseen():
    torch.manual_seed(0)
    model = _model()
    model.init_weights()
    imgs = torch.randn(2, 3, 96, 96)
    torch.manual_seed(1)
    loss = model.loss(imgs, None)['loss']
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    params = dict(model.named_parameters())
    for name in ('backbone.downsample_layers.0.0.weight',
                 'backbone.stages.0.0.depthwise_conv.weight',
                 'backbone.stages.2.1.grn.beta',
                 'backbone.downsample_layers.3.1.weight',
                 'neck.mask_token'):
        grad = params[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the encoder never sees the masked units' pixels
    mask = random_unit_mask(2, (3, 3), 0.6)
    feats = model.backbone(imgs, mask=mask)
    other = imgs.clone()
    m = mask.view(2, 1, 3, 3).repeat_interleave(32, 2).repeat_interleave(
        32, 3).expand_as(imgs)
    other[m] = torch.randn(int(m.sum()))
    torch.testing.assert_close(model.backbone(other, mask=mask)[-1],
                               feats[-1], atol=0, rtol=0)


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    model = _model()
    model.init_weights()
    # smooth images: a unit's normalised pixels are predictable
    imgs = F.interpolate(torch.randn(4, 3, 4, 4), size=64, mode='bicubic')
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(16):  # a fresh random mask at every step
        loss = model.loss(imgs, None)['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the zero-init decoder starts at ~1 (predicting the mean)
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses


def test_extract_feat_is_dense_and_checkpoint_fits_mmpretrain():
    model = _model().eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    assert feats[-1].shape == (1, 48, 2, 2)
    plain = ConvNeXt(ARCH, use_grn=True, layer_scale_init_value=0.,
                     out_indices=(3, ), gap_before_final_norm=False)
    plain.load_state_dict(model.backbone.state_dict(), strict=True)


def test_bad_parts_are_named_at_build():
    with pytest.raises(ValueError, match='neck.in_channels=48'):
        _model(arch=dict(depths=[1, 1, 1, 1], channels=[8, 8, 8, 40]))


@pytest.mark.slow
def test_demo_config_trains_with_mim(repo_root, demo_data, tmp_path):
    cfg = Config.fromfile(osp.join(repo_root, 'configs', DEMO_CFG))
    assert cfg.model.backbone.type == 'GreenConvNeXt'
    cmd = [
        sys.executable, '-m', 'mim', 'train', 'mmpretrain',
        osp.join(repo_root, 'configs', DEMO_CFG), '--work-dir',
        str(tmp_path), '--cfg-options', 'train_cfg.max_epochs=1',
        'train_dataloader.batch_size=8', 'train_dataloader.num_workers=0',
        f'train_dataloader.dataset.data_root={demo_data}',
        'default_hooks.logger.interval=1', 'custom_hooks.0.interval=2'
    ]
    env = dict(os.environ, PYTHONPATH=repo_root)
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    losses = [float(x) for x in re.findall(r'loss: ([0-9.]+)', log)]
    assert len(losses) == 4 and all(l == l for l in losses), log[-2000:]
    assert (tmp_path / 'epoch_1.pth').exists()
    assert list((tmp_path / 'vis').glob('*.png')), 'no reconstruction grid'


def test_training_step_on_device_has_no_sync_and_no_blocking_copy():
    """The step audit of test_device_step, for ConvNeXt: the neighbour
    tables are built on the device with no data-dependent op, and every
    host-to-device copy is queued before the first device computation."""
    from test_device_step import StepAudit
    model = _model().train().to('meta')
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    imgs = torch.empty(4, 3, 96, 96, device='meta')
    for audit in (StepAudit('meta'), StepAudit('meta', late_copies=True)):
        with audit:
            loss = model.loss(imgs, None)['loss']
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert audit.device_ops > 100
        assert audit.problems == []
    assert loss.device.type == 'meta' and loss.shape == ()
