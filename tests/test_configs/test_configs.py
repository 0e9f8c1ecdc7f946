import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401

CFG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')
PRETRAIN = sorted(glob.glob(osp.join(CFG_DIR, 'greenmim_*.py')))


def test_entry_point_matches_the_paper_recipe():
    cfg = Config.fromfile(osp.join(CFG_DIR, 'greenmim_swin.py'))
    bb = cfg.model.backbone
    assert (cfg.model.type, bb.type, bb.arch, bb.window_size,
            bb.img_size) == ('GreenMIM', 'GreenSwinTransformer', 'base', 7,
                             224)
    assert cfg.model.mask_ratio == 0.75
    opt = cfg.optim_wrapper
    assert opt.type == 'AmpOptimWrapper'
    assert opt.optimizer.lr == pytest.approx(1.5e-4 * 2048 / 256)
    assert opt.optimizer.betas == (0.9, 0.95)
    assert opt.optimizer.weight_decay == 0.05
    assert cfg.auto_scale_lr.base_batch_size == 2048
    assert 8 * cfg.train_dataloader.batch_size == 2048
    assert cfg.train_cfg.max_epochs == 800
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.end, cos.type, cos.end) == ('LinearLR', 40,
                                                        'CosineAnnealingLR',
                                                        800)
    assert cfg.train_dataloader.dataset.data_root == 'data/imagenet/'
    assert cfg.custom_imports.imports == ['greenmim_mm']
    # no cross-package `_base_` (it crashes default_collate with _scope_)
    assert '_scope_' not in cfg.train_dataloader.collate_fn


@pytest.mark.parametrize('path', PRETRAIN, ids=osp.basename)
def test_every_pretrain_config_builds(path):
    cfg = Config.fromfile(path)
    model = MODELS.build(cfg.model)
    assert model.backbone.mask_unit == 32


def test_variants_override_only_what_changes():
    w14 = Config.fromfile(
        osp.join(CFG_DIR,
                 'greenmim_swin-base-w14_8xb256-amp-coslr-800e_in1k.py'))
    large = Config.fromfile(
        osp.join(CFG_DIR,
                 'greenmim_swin-large-w14_8xb256-amp-coslr-800e_in1k.py'))
    assert w14.model.backbone.window_size == 14
    assert w14.model.backbone.arch == 'base'
    assert (large.model.backbone.arch, large.model.backbone.window_size,
            large.model.neck.in_channels) == ('large', 14, 1536)


def test_twins_entry_point_and_pcpvt_variant():
    svt = Config.fromfile(osp.join(CFG_DIR, 'greenmim_twins.py'))
    pcpvt = Config.fromfile(
        osp.join(CFG_DIR,
                 'greenmim_twins-pcpvt-large_8xb256-amp-coslr-800e_in1k.py'))
    assert (svt.model.backbone.type, svt.model.backbone.arch,
            svt.model.neck.in_channels) == ('GreenSVT', 'large', 1024)
    assert (pcpvt.model.backbone.type, pcpvt.model.backbone.arch,
            pcpvt.model.neck.in_channels) == ('GreenPCPVT', 'large', 512)
    # the variant changes the backbone (and the decoder's input) only
    for key in ('optim_wrapper', 'param_scheduler', 'train_dataloader',
                'train_cfg'):
        assert pcpvt[key] == svt[key], key
    assert pcpvt.model.head == svt.model.head
    assert pcpvt.model.backbone.norm_after_stage == [False] * 3 + [True]
    assert '_scope_' not in svt.train_dataloader.collate_fn
