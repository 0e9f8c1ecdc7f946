"""End-to-end transfer to detection: a tiny GreenMIM pretraining
(`mim train mmpretrain`) writes a checkpoint, a Mask R-CNN built from our
mmdet config (with a reduced model) loads it through ``init_cfg=Pretrained``,
then `mim train mmdet ... --cfg-options model.backbone.init_cfg.checkpoint=`
trains a few iterations and evaluates bbox and segm mAP with CocoMetric on a
small COCO-format dataset of drawn shapes generated here."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

DET_CFG = 'mask-rcnn_greenmim-swin-base-w7_fpn_1x_coco.py'
PRETRAIN_CFG = 'greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py'
CLASSES = ('square', 'disc', 'triangle')
# a tiny Swin (4 stages, window 7) shared by pretraining and detection
ARCH = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])
# (`_delete_`: the base configs name the arch by a string)
ARCH_CFG = dict(_delete_=True, **ARCH)


def _polygon(kind: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Outline of a shape as ``(K, 2)`` float (x, y) points."""
    if kind == 'square':
        ang = np.deg2rad([45, 135, 225, 315])
    elif kind == 'triangle':
        ang = np.deg2rad([90, 210, 330])
    else:  # disc
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return np.stack([cx + r * np.cos(ang), cy - r * np.sin(ang)], 1)


def make_coco(root: str, num: int = 6, seed: int = 0) -> str:
    """Write ``num`` images with 1-3 filled shapes and a COCO json.

    Returns:
        str: Path of the annotation file (polygons, as in COCO).
    """
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'images'))
    images, anns = [], []
    for i in range(num):
        h, w = (int(v) for v in rng.choice([128, 160, 192, 256], 2))
        yy, xx = np.mgrid[:h, :w]
        bg = np.stack([xx * 200 / w, yy * 200 / h,
                       np.full((h, w), 60.0)], -1)
        img = Image.fromarray((bg + rng.normal(0, 8, bg.shape)).clip(
            0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            cat = int(rng.integers(len(CLASSES)))
            r = float(rng.uniform(18, min(h, w) / 4))
            cx = float(rng.uniform(r, w - r))
            cy = float(rng.uniform(r, h - r))
            poly = _polygon(CLASSES[cat], cx, cy, r)
            draw.polygon([tuple(p) for p in poly],
                         fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            flat = poly.reshape(-1).round(2).tolist()
            rle = mask_utils.frPyObjects([flat], h, w)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            anns.append(dict(
                id=len(anns) + 1, image_id=i + 1, category_id=cat + 1,
                segmentation=[flat], iscrowd=0,
                area=float(mask_utils.area(rle).sum()),
                bbox=[float(x0), float(y0), float(x1 - x0),
                      float(y1 - y0)]))
        name = f'{i:04d}.png'
        img.save(osp.join(root, 'images', name))
        images.append(dict(id=i + 1, file_name=name, height=h, width=w))
    coco = dict(images=images, annotations=anns,
                categories=[dict(id=k + 1, name=c)
                            for k, c in enumerate(CLASSES)])
    ann_file = osp.join(root, 'annotations.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    return ann_file


def _mim_train(package, cfg, work, repo_root, *cfg_options):
    cmd = [sys.executable, '-m', 'mim', 'train', package, cfg,
           '--work-dir', str(work)]
    if cfg_options:
        cmd += ['--cfg-options', *cfg_options]
    env = dict(os.environ, PYTHONPATH=repo_root)
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    return log


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('coco'))
    return root, make_coco(root)


@pytest.fixture(scope='module')
def pretrain_ckpt(coco, repo_root, tmp_path_factory):
    """Tiny GreenMIM pretraining (3 iterations) on the unlabelled images."""
    tmp = tmp_path_factory.mktemp('pretrain')
    cfg = tmp / 'greenmim_tiny.py'
    cfg.write_text(f"""
_base_ = {osp.join(repo_root, 'configs', PRETRAIN_CFG)!r}
model = dict(
    backbone=dict(arch={ARCH_CFG!r}),
    neck=dict(in_channels={ARCH['embed_dims'] * 8}, embed_dims=32,
              num_heads=2))
train_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(data_root={coco[0]!r}, data_prefix='images'))
train_cfg = dict(max_epochs=1)
custom_hooks = []
default_hooks = dict(logger=dict(interval=1))
""")
    _mim_train('mmpretrain', str(cfg), tmp / 'work', repo_root)
    ckpt = tmp / 'work' / 'epoch_1.pth'
    assert ckpt.exists()
    return str(ckpt)


@pytest.fixture(scope='module')
def det_cfg(coco, repo_root, tmp_path_factory):
    """Our mmdet config with a reduced model and the generated data."""
    root, ann_file = coco
    dims = [ARCH['embed_dims'] * 2**i for i in range(4)]
    path = tmp_path_factory.mktemp('det') / 'mask-rcnn_tiny.py'
    path.write_text(f"""
_base_ = {osp.join(repo_root, 'configs', 'mmdet', DET_CFG)!r}
ch = 32  # FPN and head widths, proposal and RoI counts all reduced
model = dict(
    backbone=dict(arch={ARCH_CFG!r}, drop_path_rate=0.1),
    neck=dict(in_channels={dims!r}, out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=dict(in_channels=ch, fc_out_channels=64,
                       num_classes={len(CLASSES)}),
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(in_channels=ch, conv_out_channels=ch,
                       num_classes={len(CLASSES)})),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(max_per_img=20)))
metainfo = dict(classes={CLASSES!r})
scale = (256, 192)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
data = dict(data_root={root + '/'!r}, ann_file='annotations.json',
            data_prefix=dict(img='images/'), metainfo=metainfo)
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=train_pipeline, **data))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=test_pipeline, **data))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={ann_file!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
""")
    return str(path)


def test_coco_data_read_by_pycocotools_and_mmdet(coco):
    from mmdet.datasets import CocoDataset
    from pycocotools.coco import COCO
    root, ann_file = coco
    api = COCO(ann_file)
    assert len(api.getImgIds()) == 6 and len(api.getAnnIds()) >= 6
    ds = CocoDataset(data_root=root + '/', ann_file='annotations.json',
                     data_prefix=dict(img='images/'),
                     metainfo=dict(classes=CLASSES), pipeline=[])
    assert len(ds) == 6
    info = ds.get_data_info(0)
    inst = info['instances'][0]
    assert osp.isfile(info['img_path'])
    assert len(inst['mask'][0]) >= 6 and inst['bbox_label'] < len(CLASSES)
    # the polygon's mask agrees with the drawn area
    assert api.annToMask(api.loadAnns(1)[0]).sum() == pytest.approx(
        api.loadAnns(1)[0]['area'], rel=0.1)


def test_mask_rcnn_loads_greenmim_checkpoint(det_cfg, pretrain_ckpt):
    import greenmim_mm
    from mmdet.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile(det_cfg)
    cfg.model.backbone.init_cfg.checkpoint = pretrain_ckpt
    model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert type(backbone).__name__ == 'GreenSwinTransformer'
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model.init_weights()
    state = greenmim_mm.safe_load(pretrain_ckpt)['state_dict']
    loaded = {k[len('backbone.'):]: v for k, v in state.items()
              if k.startswith('backbone.')}
    after = backbone.state_dict()
    # every pretrained tensor arrived, and really differs from the init
    assert set(loaded) <= set(after)
    for k, v in loaded.items():
        assert torch.equal(after[k], v), k
    qkv = 'stages.0.blocks.0.attn.w_msa.qkv.weight'
    assert not torch.equal(before[qkv], after[qkv])
    # only the extra detection norms (out_indices 0-2) are not pretrained
    assert set(after) - set(loaded) == {
        f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}



def test_mask_rcnn_rejects_checkpoint_of_other_arch(det_cfg, pretrain_ckpt):
    """Why the configs use GreenSwinTransformer: a checkpoint of another
    width is refused instead of silently leaving a random backbone."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile(det_cfg)
    cfg.model.backbone.arch = dict(ARCH, embed_dims=24)
    cfg.model.neck.in_channels = [24 * 2**i for i in range(4)]
    cfg.model.backbone.init_cfg.checkpoint = pretrain_ckpt
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match='GreenSwinTransformer'):
        model.init_weights()

def test_mim_train_mmdet_from_pretrain(det_cfg, pretrain_ckpt, repo_root,
                                       tmp_path):
    work = tmp_path / 'work'
    log = _mim_train('mmdet', det_cfg, work, repo_root,
                     f'model.backbone.init_cfg.checkpoint={pretrain_ckpt}')
    assert any(pretrain_ckpt in line and 'load' in line.lower()
               for line in log.splitlines()), log[-5000:]
    scalars = glob.glob(str(work / '*' / 'vis_data' / 'scalars.json'))
    assert len(scalars) == 1, log[-3000:]
    with open(scalars[0]) as f:
        records = [json.loads(line) for line in f]
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    metrics = [r for r in records if 'coco/bbox_mAP' in r]
    assert len(metrics) == 1, log[-3000:]
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50',
                'coco/segm_mAP_50'):
        assert 0.0 <= metrics[0][key] <= 1.0, key
    # three steps at the warm-up lr keep the backbone at the pretraining
    import greenmim_mm
    # an mmdet checkpoint (its MultiStepLR state holds a Counter) loads safely
    ckpt = greenmim_mm.safe_load(str(work / 'epoch_1.pth'))['state_dict']
    pre = greenmim_mm.safe_load(pretrain_ckpt)['state_dict']
    key = 'backbone.stages.0.blocks.0.attn.w_msa.qkv.weight'
    assert torch.allclose(ckpt[key], pre[key], atol=1e-4)
