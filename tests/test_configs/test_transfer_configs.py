"""Transfer configs: mmdet Mask R-CNN (configs/mmdet) and ImageNet
fine-tuning (configs/benchmarks) load, build, and set up their optimizers
as the recipes say."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import greenmim_mm  # noqa: F401  registers the models

CFG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')
DET = sorted(glob.glob(osp.join(CFG_DIR, 'mmdet', '*swin*.py')))
FT = sorted(glob.glob(osp.join(CFG_DIR, 'benchmarks', '*swin*.py')))
DET_1X = osp.join(CFG_DIR, 'mmdet',
                  'mask-rcnn_greenmim-swin-base-w7_fpn_1x_coco.py')
DET_3X = osp.join(CFG_DIR, 'mmdet',
                  'mask-rcnn_greenmim-swin-base-w7_fpn_ms-crop-3x_coco.py')
DET_TWINS = osp.join(CFG_DIR, 'mmdet',
                     'mask-rcnn_greenmim-twins-svt-large_fpn_1x_coco.py')
FT_W7 = osp.join(CFG_DIR, 'benchmarks',
                 'greenmim_swin-base-w7_8xb256-amp-coslr-100e_in1k.py')
FT_W14 = osp.join(CFG_DIR, 'benchmarks',
                  'greenmim_swin-base-w14_8xb256-amp-coslr-100e_in1k.py')
FT_L14 = osp.join(CFG_DIR, 'benchmarks',
                  'greenmim_swin-large-w14_8xb256-amp-coslr-100e_in1k.py')
DET_W14 = osp.join(CFG_DIR, 'mmdet',
                   'mask-rcnn_greenmim-swin-base-w14_fpn_1x_coco.py')
DET_L14 = osp.join(CFG_DIR, 'mmdet',
                   'mask-rcnn_greenmim-swin-large-w14_fpn_1x_coco.py')
TINY = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])


def _stages(bb):
    """The four per-stage configs of a Swin backbone config."""
    s = bb.get('stage_cfgs', {})
    return list(s) if isinstance(s, (list, tuple)) else [s] * 4


def _registry(cfg):
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    return MODELS


def _build(cfg):
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return _registry(cfg).build(cfg.model)


def _groups(cfg, model):
    """``{param name: param group}`` of the config's optimizer wrapper."""
    ow_cfg = cfg.optim_wrapper.copy()
    ow_cfg.type = 'OptimWrapper'  # AmpOptimWrapper needs CUDA
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        ow = build_optim_wrapper(model, ow_cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in ow.optimizer.param_groups:
        for p in g['params']:
            out[names[id(p)]] = g
    assert len(out) == sum(1 for p in model.parameters() if p.requires_grad)
    return out


def test_configs_found():
    assert set(glob.glob(osp.join(CFG_DIR, 'mmdet', '*.py'))) >= {
        DET_1X, DET_3X, DET_W14, DET_L14, DET_TWINS}
    assert {osp.basename(p) for p in DET} == {
        osp.basename(p) for p in (DET_1X, DET_3X, DET_W14, DET_L14)}
    assert {osp.basename(p) for p in FT} == {
        osp.basename(FT_W7), osp.basename(FT_W14), osp.basename(FT_L14)}


@pytest.mark.parametrize('path', DET + FT, ids=osp.basename)
def test_transfer_config_builds(path):
    cfg = Config.fromfile(path)
    assert 'greenmim_mm' in cfg.custom_imports.imports
    bb = cfg.model.backbone
    assert bb.type.split('.')[-1] == 'GreenSwinTransformer'
    assert bb.arch in ('base', 'large')
    width = 128 if bb.arch == 'base' else 192
    # the paper's LayerNorm eps in every LayerNorm of the backbone
    assert bb.norm_cfg.eps == bb.patch_cfg.norm_cfg.eps == 1e-6
    for s in _stages(bb):
        assert s.block_cfgs.norm_cfg.eps == 1e-6
        assert s.downsample_cfg.norm_cfg.eps == 1e-6
    init = bb.init_cfg
    assert (init.type, init.prefix) == ('Pretrained', 'backbone.')
    # the default checkpoint is the last one that `mim train` of one of our
    # pretraining configs writes, for the same arch and window
    name, last = init.checkpoint.split('/')[-2:]
    assert init.checkpoint == f'work_dirs/{name}/{last}'
    pre = Config.fromfile(osp.join(CFG_DIR, name + '.py'))
    assert last == f'epoch_{pre.train_cfg.max_epochs}.pth'
    assert (pre.model.backbone.arch, pre.model.backbone.window_size) == (
        bb.arch, bb.window_size)
    # same windows per stage and LayerNorms as the pretraining config
    assert [s.get('window_size') for s in _stages(pre.model.backbone)] == [
        s.get('window_size') for s in _stages(bb)]
    assert pre.model.backbone.norm_cfg == bb.norm_cfg
    # no `_scope_` where mmengine passes a dict on without a registry
    for loader in ('train_dataloader', 'val_dataloader'):
        assert '_scope_' not in cfg[loader].get('collate_fn', {})
    model = _build(cfg)
    assert type(model.backbone).__name__ == 'GreenSwinTransformer'
    assert model.backbone.init_cfg['checkpoint'] == init.checkpoint
    if cfg.default_scope == 'mmdet':
        assert type(model).__name__ == 'MaskRCNN'
        assert cfg.model.neck.in_channels == [width * 2**i
                                              for i in range(4)]
        assert bb.out_indices == (0, 1, 2, 3)
        assert bb.drop_path_rate > 0
        feats = model.backbone(torch.zeros(1, 3, 64, 96))
        assert [f.shape[1] for f in feats] == cfg.model.neck.in_channels
    else:
        assert type(model).__name__ == 'ImageClassifier'
        assert model.head.fc.in_features == width * 8
        assert 0.05 <= bb.drop_path_rate <= 0.3


def test_mmdet_3x_overrides_only_pipeline_and_schedule():
    c1, c3 = Config.fromfile(DET_1X), Config.fromfile(DET_3X)
    assert c3.model == c1.model and c3.optim_wrapper == c1.optim_wrapper
    assert c3.val_dataloader == c1.val_dataloader
    assert (c1.train_cfg.max_epochs, c3.train_cfg.max_epochs) == (12, 36)
    assert c1.param_scheduler[1].milestones == [8, 11]
    assert c3.param_scheduler[1].milestones == [27, 33]
    assert c3.param_scheduler[1].end == 36
    types = [t.type for t in c3.train_dataloader.dataset.pipeline]
    assert 'RandomChoice' in types
    assert 'RandomChoice' not in [
        t.type for t in c1.train_dataloader.dataset.pipeline]


def test_mmdet_no_decay_on_norms_and_position_tables():
    cfg = Config.fromfile(DET_1X)
    cfg.model.backbone.arch = TINY  # same parameter names, faster
    cfg.model.neck.in_channels = [16, 32, 64, 128]
    model = _build(cfg)
    groups = _groups(cfg, model)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-4, 0.05)
    no_decay = [n for n in groups if 'norm' in n
                or 'relative_position_bias_table' in n]
    assert any('relative_position_bias_table' in n for n in no_decay)
    assert any('.norm1.' in n for n in no_decay)
    assert any('downsample.norm' in n for n in no_decay)
    assert any(n.startswith('backbone.norm0') for n in no_decay)
    for n, g in groups.items():
        expected = 0.0 if n in no_decay else 0.05
        assert g['weight_decay'] == expected, n
        assert g['lr'] == 1e-4, n
    assert groups['backbone.stages.0.blocks.0.attn.w_msa.qkv.weight'][
        'weight_decay'] == 0.05
    assert groups['rpn_head.rpn_conv.weight']['weight_decay'] == 0.05


@pytest.fixture(scope='module')
def ft_model():
    cfg = Config.fromfile(FT_W7)
    return cfg, _build(cfg)


def test_finetune_layer_decay(ft_model):
    cfg, model = ft_model
    groups = _groups(cfg, model)
    base_lr = cfg.optim_wrapper.optimizer.lr
    assert base_lr == pytest.approx(5e-3)
    pd = cfg.optim_wrapper.paramwise_cfg
    assert pd.layer_decay_rate == 0.9
    depths = model.backbone.depths  # Swin-B: 2, 2, 18, 2
    n_layers = sum(depths) + 2

    def lr(name):
        return groups[name]['lr']

    def blk(s, b):
        return f'backbone.stages.{s}.blocks.{b}.attn.w_msa.qkv.weight'

    # layer id: stem 0, block k (global) k + 1, head n_layers - 1
    assert lr('head.fc.weight') == pytest.approx(base_lr)
    assert lr('backbone.patch_embed.projection.weight') == pytest.approx(
        base_lr * 0.9**(n_layers - 1))
    assert lr(blk(0, 0)) == pytest.approx(base_lr * 0.9**(n_layers - 2))
    assert lr(blk(3, 1)) == pytest.approx(base_lr * 0.9)
    assert lr(blk(0, 0)) < lr(blk(1, 0)) < lr(blk(2, 0)) < lr(blk(3, 0))
    assert lr(blk(3, 0)) / lr(blk(0, 0)) == pytest.approx(
        0.9**-(sum(depths[:3])))
    # no decay on norms, biases and the relative position tables
    for n, g in groups.items():
        flat = ('norm' in n or n.endswith('.bias')
                or 'relative_position_bias_table' in n)
        assert g['weight_decay'] == (0.0 if flat else 0.05), n


def test_finetune_recipe():
    cfg = Config.fromfile(FT_W7)
    assert cfg.train_cfg.max_epochs == 100
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.end, cos.type, cos.begin, cos.end) == (
        'LinearLR', 20, 'CosineAnnealingLR', 20, 100)
    assert cfg.optim_wrapper.constructor == \
        'LearningRateDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.model.head.loss.label_smooth_val == 0.1
    assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup',
                                                              'CutMix']
    types = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert {'RandomResizedCrop', 'RandAugment', 'RandomErasing'} <= set(
        types)
    assert 8 * cfg.train_dataloader.batch_size == \
        cfg.auto_scale_lr.base_batch_size


def test_finetune_step_with_augments(tmp_path):
    """A tiny classifier from the fine-tune config: pipeline (RandAugment,
    RandomErasing), Mixup/CutMix, label smoothing and a layer-decay
    optimizer step, starting from a GreenMIM checkpoint."""
    from mmengine.dataset import default_collate
    from mmpretrain.registry import MODELS, TRANSFORMS
    cfg = Config.fromfile(FT_W7)
    gm = Config.fromfile(osp.join(CFG_DIR, 'greenmim_swin.py'))
    gm.model.backbone.arch = TINY
    gm.model.neck.in_channels = 128
    pretrain = MODELS.build(gm.model)
    ckpt = str(tmp_path / 'greenmim.pth')
    torch.save({'state_dict': pretrain.state_dict()}, ckpt)

    cfg.model.backbone.arch = TINY
    cfg.model.backbone.init_cfg.checkpoint = ckpt
    cfg.model.head.num_classes = 10
    cfg.model.head.in_channels = 128
    cfg.data_preprocessor.num_classes = 10
    cfg.model.data_preprocessor = cfg.data_preprocessor
    model = MODELS.build(cfg.model)
    model.init_weights()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, pretrain.backbone.state_dict()[k]), k

    rng = np.random.default_rng(0)
    pipeline = [TRANSFORMS.build(t)
                for t in cfg.train_dataloader.dataset.pipeline[1:]]
    batch = []
    for i in range(4):
        res = dict(img=rng.integers(0, 256, (240, 260, 3), dtype=np.uint8),
                   gt_label=i % 10)
        res.update(img_shape=res['img'].shape[:2],
                   ori_shape=res['img'].shape[:2])
        for t in pipeline:
            res = t(res)
        assert tuple(res['inputs'].shape) == (3, 224, 224)
        batch.append(res)
    data = model.data_preprocessor(default_collate(batch), training=True)
    # Mixup/CutMix turn the labels into soft scores
    scores = torch.stack([s.gt_score for s in data['data_samples']])
    assert scores.shape == (4, 10) and (scores.max(1).values < 1).any()
    groups = _groups(cfg, model)
    assert len({round(g['lr'], 12) for g in groups.values()}) == \
        sum(TINY['depths']) + 2
    opt = torch.optim.AdamW(
        [dict(params=g['params'], lr=g['lr'],
              weight_decay=g['weight_decay'])
         for g in {id(g): g for g in groups.values()}.values()])
    loss = model(**data, mode='loss')['loss']
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()


def test_finetune_w14_last_stage_uses_window_7():
    """The paper's w14 layout: window 14 in stages 1-3, 7 in the last (13x13
    bias tables), which at 224 px needs no ``pad_small_map``."""
    w7, w14 = Config.fromfile(FT_W7), Config.fromfile(FT_W14)
    # the sibling overrides the backbone's windows only
    b7, b14 = w7.model.pop('backbone'), w14.model.pop('backbone')
    assert w7.model == w14.model and w7.optim_wrapper == w14.optim_wrapper
    assert (b7.window_size, b14.window_size) == (7, 14)
    assert [s.get('window_size') for s in b14.stage_cfgs] == [
        None, None, None, 7]
    assert not any(s.get('pad_small_map', False) for s in b14.stage_cfgs)
    from mmpretrain.registry import MODELS
    b14.arch = TINY
    b14.init_cfg = None
    model = MODELS.build(b14)
    model.eval()
    windows = [[b.attn.window_size for b in s.blocks] for s in model.stages]
    assert windows == [[14, 14], [14, 14], [14, 14], [7, 7]]
    table = model.stages[3].blocks[0].attn.w_msa.relative_position_bias_table
    assert table.shape == (13 * 13, 8)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out[-1].shape == (1, 128, 7, 7)


def test_finetune_large_w14_is_the_papers_recipe():
    b14, l14 = Config.fromfile(FT_W14), Config.fromfile(FT_L14)
    assert (l14.model.backbone.arch, l14.model.backbone.drop_path_rate,
            l14.model.head.in_channels) == ('large', 0.3, 1536)
    assert l14.model.backbone.stage_cfgs == b14.model.backbone.stage_cfgs
    assert l14.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.8
    assert l14.optim_wrapper.optimizer.lr == pytest.approx(1e-3 * 4)
    warm, cos = l14.param_scheduler
    assert warm.start_factor * l14.optim_wrapper.optimizer.lr == \
        pytest.approx(2e-7 * 4)
    assert cos.eta_min == pytest.approx(3.5e-7 * 4)
    assert l14.train_cfg == b14.train_cfg


def test_mmdet_twins_loads_a_greenmim_twins_checkpoint(tmp_path):
    from greenmim_mm.models.backbones import GreenSVT
    cfg = Config.fromfile(DET_TWINS)
    bb = cfg.model.backbone
    assert (bb.type, bb.arch, bb.out_indices) == ('mmpretrain.GreenSVT',
                                                  'large', (0, 1, 2, 3))
    assert cfg.model.neck.in_channels == [128, 256, 512, 1024]
    assert bb.init_cfg.checkpoint == 'work_dirs/greenmim_twins/epoch_800.pth'
    pre = Config.fromfile(osp.join(CFG_DIR, 'greenmim_twins.py'))
    assert pre.train_cfg.max_epochs == 800
    assert pre.model.backbone.arch == bb.arch
    # a tiny SVT pretrained by GreenMIM (norm after the last stage only)
    tiny = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 2, 1],
                num_heads=[1, 2, 4, 8], patch_sizes=[4, 2, 2, 2],
                strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7])
    src = GreenSVT(tiny, out_indices=(3, ),
                   norm_after_stage=[False] * 3 + [True])
    ckpt = tmp_path / 'greenmim_twins.pth'
    torch.save({'state_dict': {'backbone.' + k: v
                               for k, v in src.state_dict().items()}}, ckpt)
    cfg.model.backbone.arch = tiny
    cfg.model.backbone.init_cfg.checkpoint = str(ckpt)
    cfg.model.neck.in_channels = tiny['embed_dims']
    model = _build(cfg)
    model.init_weights()
    got = model.backbone.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(got[k], v), k
    feats = model.backbone(torch.zeros(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == tiny['embed_dims']
    # no decay on norms, decay elsewhere
    groups = _groups(cfg, model)
    assert groups['backbone.norm_after_stage3.weight']['weight_decay'] == 0
    assert groups['backbone.position_encodings.0.proj.weight'][
        'weight_decay'] == 0.05
    # a Swin checkpoint is refused with a message naming the mismatch
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'swin.pth')
    from greenmim_mm.models.backbones import GreenSwinTransformer
    torch.save({'state_dict': {
        'backbone.' + k: v for k, v in GreenSwinTransformer(
            arch=TINY).state_dict().items()}}, tmp_path / 'swin.pth')
    with pytest.raises(ValueError, match='GreenSVT'):
        _build(cfg).init_weights()
