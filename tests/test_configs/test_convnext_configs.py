"""ConvNeXt configs: the FCMAE-style pretraining recipe and its variants,
and the fine-tune and Mask R-CNN configs taking a GreenMIM checkpoint."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from test_transfer_configs import _build, _groups

import greenmim_mm  # noqa: F401
from greenmim_mm.models.backbones import GreenConvNeXt

CFG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')
PRE_T = 'greenmim_convnext-v2-tiny_8xb256-amp-coslr-800e_in1k.py'
PRE_B = 'greenmim_convnext-v2-base_8xb256-amp-coslr-800e_in1k.py'
PRE_V1 = 'greenmim_convnext-base_8xb256-amp-coslr-800e_in1k.py'
FT = osp.join('benchmarks',
              'greenmim_convnext-v2-tiny_8xb128-amp-coslr-300e_in1k.py')
DET = osp.join('mmdet', 'mask-rcnn_greenmim-convnext-v2-tiny_fpn_1x_coco.py')
SMALL = dict(depths=[1, 1, 2, 1], channels=[8, 16, 24, 32])
V2 = dict(use_grn=True, layer_scale_init_value=0.)


def _cfg(name):
    return Config.fromfile(osp.join(CFG_DIR, name))


def _lr_scales(cfg, model):
    """``{param name: (lr, weight decay)}`` of the config's optimizer."""
    cfg.optim_wrapper.pop('loss_scale', None)  # of AmpOptimWrapper
    return {n: (g['lr'], g['weight_decay'])
            for n, g in _groups(cfg, model).items()}


def _checkpoint(tmp_path):
    """A GreenMIM-style checkpoint of a small V2 (last-stage norm only)."""
    torch.manual_seed(0)
    src = GreenConvNeXt(SMALL, **V2, out_indices=(3, ),
                        gap_before_final_norm=False)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / 'epoch_800.pth'
    torch.save({'state_dict': {'backbone.' + k: v
                               for k, v in src.state_dict().items()}}, path)
    return src, str(path)


def test_pretraining_recipe_is_fcmae():
    cfg = _cfg(PRE_T)
    m = cfg.model
    assert (m.type, m.mask_ratio, m.backbone.type, m.backbone.arch) == (
        'GreenMIM', 0.6, 'GreenConvNeXt', 'tiny')
    assert m.backbone.use_grn and m.backbone.layer_scale_init_value == 0
    assert m.backbone.gap_before_final_norm is False
    assert (m.neck.in_channels, m.neck.embed_dims, m.neck.depth) == (768,
                                                                     512, 1)
    assert m.head.norm_pix and m.head.patch_size == 32
    opt = cfg.optim_wrapper
    assert opt.optimizer.lr == pytest.approx(1.5e-4 * 2048 / 256)
    assert opt.optimizer.betas == (0.9, 0.95)
    assert opt.optimizer.weight_decay == 0.05
    assert opt.paramwise_cfg.flat_decay_mult == 0
    assert cfg.train_cfg.max_epochs == 800
    model = _build(cfg)
    groups = _lr_scales(cfg, model)
    assert groups['backbone.stages.0.0.grn.gamma'][1] == 0
    assert groups['backbone.stages.0.0.norm.bias'][1] == 0
    assert groups['neck.mask_token'][1] == 0
    assert groups['backbone.stages.0.0.pointwise_conv1.weight'][1] == 0.05


def test_variants_override_only_what_changes():
    t, b, v1 = _cfg(PRE_T), _cfg(PRE_B), _cfg(PRE_V1)
    assert (b.model.backbone.arch, b.model.neck.in_channels) == ('base',
                                                                 1024)
    b.model.backbone.arch, b.model.neck.in_channels = 'tiny', 768
    assert b.model == t.model and b.optim_wrapper == t.optim_wrapper
    assert not v1.model.backbone.use_grn
    assert v1.model.backbone.layer_scale_init_value == 1e-6
    v1.model.backbone.use_grn = True
    v1.model.backbone.layer_scale_init_value = 0.
    assert v1.model == _cfg(PRE_B).model


def test_finetune_loads_the_checkpoint_checked(tmp_path):
    cfg = _cfg(FT)
    bb = cfg.model.backbone
    assert bb.init_cfg.checkpoint.split('/')[-2] + '.py' == PRE_T
    assert (bb.type, bb.drop_path_rate, cfg.model.neck) == ('GreenConvNeXt',
                                                            0.2, None)
    assert 8 * cfg.train_dataloader.batch_size == 1024
    assert cfg.optim_wrapper.optimizer.lr == 8e-4
    assert cfg.train_cfg.max_epochs == 300
    src, ckpt = _checkpoint(tmp_path)
    bb.arch, bb.init_cfg.checkpoint = SMALL, ckpt
    cfg.model.head.in_channels = SMALL['channels'][-1]
    cfg.model.head.num_classes = 10
    model = _build(cfg)
    model.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    feats = model.extract_feat(torch.zeros(2, 3, 64, 64))
    assert model.head(feats).shape == (2, 10)
    scales = _lr_scales(cfg, model)
    assert scales['backbone.downsample_layers.0.0.weight'][0] < scales[
        'backbone.stages.3.0.pointwise_conv1.weight'][0] < scales[
            'head.fc.weight'][0]
    assert scales['backbone.stages.1.0.grn.beta'][1] == 0
    # a checkpoint of another width is refused, naming the file
    bb.arch = dict(SMALL, channels=[8, 16, 24, 40])
    cfg.model.head.in_channels = 40
    with pytest.raises(ValueError, match='epoch_800.pth'):
        _build(cfg).init_weights()


def test_mmdet_mask_rcnn_takes_the_checkpoint(tmp_path):
    cfg = _cfg(DET)
    bb = cfg.model.backbone
    assert bb.type == 'mmpretrain.ConvNeXt'
    assert bb.init_cfg.type == 'Pretrained'
    assert bb.init_cfg.prefix == 'backbone.'
    assert bb.init_cfg.checkpoint.split('/')[-2] + '.py' == PRE_T
    assert cfg.model.neck.in_channels == [96, 192, 384, 768]
    assert 'greenmim_mm' in cfg.custom_imports.imports  # the safe loader
    src, ckpt = _checkpoint(tmp_path)
    bb.arch, bb.init_cfg.checkpoint = SMALL, ckpt
    cfg.model.neck.in_channels = SMALL['channels']
    model = _build(cfg)
    assert type(model).__name__ == 'MaskRCNN'
    model.init_weights()
    got = model.backbone.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(got[k], v), k
    feats = model.backbone(torch.zeros(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == SMALL['channels']
    scales = _lr_scales(cfg, model)  # mmdet's ConvNeXt layer decay
    assert scales['backbone.downsample_layers.0.0.weight'][0] < scales[
        'backbone.stages.3.0.pointwise_conv1.weight'][0]
