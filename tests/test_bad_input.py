"""Bad input gets an error naming its cause.

Covered elsewhere: image size not a multiple of the mask unit, mask ratio
outside (0, 1) and bad window size / arch name
(test_models/test_backbones/test_green_swin.py, test_utils/test_masking.py,
test_selfsup/test_greenmim.py); truncated, corrupt or unsafe checkpoint
files (test_checkpoint.py); a Pretrained checkpoint of the wrong
architecture (test_models/test_backbones/test_pretrained_check.py).
"""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401

DEMO_CFG = 'greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py'


def _build_train_dataloader(repo_root, data_root):
    """The demo config's train dataloader, built as the Runner does."""
    cfg = Config.fromfile(osp.join(repo_root, 'configs', DEMO_CFG))
    dl = cfg.train_dataloader
    dl.dataset.data_root = str(data_root)
    dl.num_workers = 0
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return Runner.build_dataloader(dl)


def test_empty_dataset_folder_is_named(repo_root, tmp_path):
    """mmpretrain's CustomDataset already names the empty folder."""
    (tmp_path / 'train').mkdir()
    with pytest.raises(RuntimeError,
                       match='Found 0 files .*' +
                       re.escape(str(tmp_path / 'train'))):
        _build_train_dataloader(repo_root, tmp_path)


def test_missing_dataset_folder_is_named(repo_root, tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=re.escape(str(tmp_path / 'train'))):
        _build_train_dataloader(repo_root, tmp_path)


def test_ratio_leaving_no_visible_unit_fails_at_the_first_step():
    """0.8 of the 4 units of a 64 px image leaves none visible."""
    model = MODELS.build(
        dict(type='GreenMIM', mask_ratio=0.8,
             backbone=dict(type='GreenSwinTransformer', arch=dict(
                 embed_dims=16, depths=[2, 2, 2, 2],
                 num_heads=[1, 1, 1, 1])),
             neck=dict(type='GreenMIMDecoder', in_channels=128,
                       embed_dims=32, num_heads=1),
             head=dict(type='GreenMIMHead', patch_size=32,
                       loss=dict(type='PixelReconstructionLoss',
                                 criterion='L2'))))
    with pytest.raises(ValueError, match='leaves no visible mask unit'):
        model.loss(torch.zeros(1, 3, 64, 64), None)


def test_train_py_rejects_a_missing_resume_checkpoint(repo_root, tmp_path):
    from train import merge_args, parse_args
    cfg_path = osp.join(repo_root, 'configs', DEMO_CFG)
    args = parse_args([cfg_path, '--resume', str(tmp_path / 'nope.pth')])
    with pytest.raises(FileNotFoundError, match='nope.pth: no such'):
        merge_args(Config.fromfile(cfg_path), args)
    # --resume without a path: the latest checkpoint of the work dir
    cfg = merge_args(Config.fromfile(cfg_path), parse_args(
        [cfg_path, '--resume', '--work-dir', str(tmp_path)]))
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.work_dir == str(tmp_path)


def test_train_py_explains_gpu_only_launchers(repo_root):
    from train import setup_cpu_dist
    cfg = Config.fromfile(osp.join(repo_root, 'configs', DEMO_CFG))
    cfg.launcher = 'slurm'
    with pytest.raises(RuntimeError, match='use --launcher pytorch'):
        setup_cpu_dist(cfg)


# --------------------------------------------------------------------------
# GreenMIM parts that disagree fail at build time, naming both settings
# --------------------------------------------------------------------------
SWIN_ARCH = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 1, 1, 1])
TWINS_ARCH = dict(embed_dims=[16, 32, 32, 48], depths=[1, 1, 1, 1],
                  num_heads=[1, 2, 2, 4], patch_sizes=[4, 2, 2, 2],
                  strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                  sr_ratios=[8, 4, 2, 1])


def _greenmim_cfg(backbone=None, neck=None, head=None, **kw):
    """A tiny GreenMIM config whose parts agree, with overrides."""
    return dict(
        type='GreenMIM',
        backbone=dict(dict(type='GreenSwinTransformer', arch=SWIN_ARCH),
                      **(backbone or {})),
        neck=dict(dict(type='GreenMIMDecoder', in_channels=128,
                       embed_dims=32, num_heads=1), **(neck or {})),
        head=dict(dict(type='GreenMIMHead', patch_size=32,
                       loss=dict(type='PixelReconstructionLoss',
                                 criterion='L2')), **(head or {})),
        **kw)


def test_agreeing_parts_build_and_train_one_step():
    model = MODELS.build(_greenmim_cfg())
    loss = model.loss(torch.randn(2, 3, 64, 64), None)['loss']
    assert torch.isfinite(loss)


def test_head_patch_size_other_than_the_mask_unit():
    with pytest.raises(ValueError, match=r'head\.patch_size=16 .*mask unit '
                       r'\(32 px.*GreenSwinTransformer'):
        MODELS.build(_greenmim_cfg(head=dict(patch_size=16)))


def test_neck_unit_size_other_than_the_mask_unit():
    with pytest.raises(ValueError, match=r'neck\.unit_size=16 .*mask unit '
                       r'\(32 px'):
        MODELS.build(_greenmim_cfg(neck=dict(unit_size=16)))


def test_neck_in_channels_other_than_the_last_stage_width():
    with pytest.raises(ValueError, match=r'neck\.in_channels=256 .*last '
                       r'stage \(128'):
        MODELS.build(_greenmim_cfg(neck=dict(in_channels=256)))


def test_twins_neck_in_channels_other_than_the_last_stage_width():
    cfg = _greenmim_cfg(neck=dict(in_channels=32))
    cfg['backbone'] = dict(type='GreenPCPVT', arch=TWINS_ARCH)
    with pytest.raises(ValueError, match=r'neck\.in_channels=32 .*last '
                       r'stage \(48, GreenPCPVT'):
        MODELS.build(cfg)
    cfg['neck']['in_channels'] = 48  # agrees: builds
    MODELS.build(cfg)


@pytest.mark.parametrize('out_indices', [(0, 1, 2), (2, ), (-1, )])
def test_out_indices_without_the_last_stage(out_indices):
    """-1 too: the masked forward tests ``i in out_indices`` literally."""
    with pytest.raises(ValueError, match=r'out_indices=.* must include the '
                       r'last stage \(3\)'):
        MODELS.build(_greenmim_cfg(backbone=dict(out_indices=out_indices)))


def test_twins_out_indices_without_the_last_stage():
    cfg = _greenmim_cfg(neck=dict(in_channels=48))
    cfg['backbone'] = dict(type='GreenSVT', out_indices=(0, 1),
                           arch=dict(TWINS_ARCH, window_sizes=[7, 7, 7, 7]))
    with pytest.raises(ValueError, match=r'must include the last stage '
                       r'\(3\) of GreenSVT'):
        MODELS.build(cfg)


@pytest.mark.parametrize('value', ['no', 'False', 0, 1, None])
def test_prefetch_plans_must_be_a_bool(value):
    with pytest.raises(TypeError, match='prefetch_plans must be True or '
                       f'False, got {re.escape(repr(value))}'):
        MODELS.build(_greenmim_cfg(prefetch_plans=value))


# --------------------------------------------------------------------------
# masks and images given to a Green backbone
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def swin():
    from greenmim_mm.models import GreenSwinTransformer
    torch.manual_seed(0)
    model = GreenSwinTransformer(
        arch=dict(embed_dims=32, depths=[2, 2, 2, 2],
                  num_heads=[1, 2, 4, 8]), window_size=2,
        drop_path_rate=0., out_indices=(0, 1, 2, 3))
    model.init_weights()
    model.eval()  # SwinTransformer.train() returns None: no chaining
    return model


MASK = [[0, 1, 1, 0], [1, 0, 1, 0]]  # 64 px images: a 2x2 unit grid


def test_numpy_and_list_masks_equal_the_tensor_mask(swin):
    import numpy as np
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = swin(x, mask=torch.tensor(MASK, dtype=torch.bool))
        for mask in (np.array(MASK), np.array(MASK, dtype=bool),
                     np.array(MASK, dtype=np.float32).reshape(2, 2, 2),
                     MASK, torch.tensor(MASK, dtype=torch.float64),
                     torch.tensor(MASK, dtype=torch.uint8)):
            out = swin(x, mask=mask)
            assert len(out) == len(ref)
            for o, r in zip(out, ref):
                torch.testing.assert_close(o, r, rtol=0, atol=0)


@pytest.mark.parametrize('soft', [
    [[0, 0.5, 1, 0], [1, 0, 1, 0]],
    [[0, 2, 1, 0], [1, 0, 1, 0]],
    [[0, float('nan'), 1, 0], [1, 0, 1, 0]],
])
def test_soft_mask_is_refused(swin, soft):
    import numpy as np
    for mask in (soft, np.array(soft), torch.tensor(soft)):
        with pytest.raises(ValueError, match='mask must be binary .*soft'):
            swin(torch.randn(2, 3, 64, 64), mask=mask)


def test_unreadable_mask_is_refused(swin):
    with pytest.raises(TypeError, match='mask must be a tensor, numpy '
                       'array or list of 0/1 values, got list'):
        swin(torch.randn(2, 3, 64, 64), mask=[[0, 1, 1], [1, 0]])
    with pytest.raises(TypeError, match='got str'):
        swin(torch.randn(2, 3, 64, 64), mask='0110')


def test_all_masked_sample_is_refused(swin):
    with pytest.raises(ValueError, match=r'mask leaves no visible unit in '
                       r'sample\(s\) \[1\]'):
        swin(torch.randn(2, 3, 64, 64), mask=[[0, 1, 1, 1], [1, 1, 1, 1]])


def test_image_without_a_batch_dimension_is_refused(swin):
    with pytest.raises(ValueError, match=re.escape(
            'expected (B, 3, H, W) images, got shape (3, 64, 64)')):
        swin(torch.randn(3, 64, 64), mask=[[0, 1, 1, 1]])
    # the dense path (no mask) too: mmpretrain would run it unbatched
    with pytest.raises(ValueError, match=re.escape(
            'expected (B, 3, H, W) images, got shape (3, 64, 64)')):
        swin(torch.randn(3, 64, 64))


def test_twins_takes_list_masks_and_refuses_bad_ones():
    from greenmim_mm.models import GreenPCPVT
    torch.manual_seed(0)
    model = GreenPCPVT(arch=TWINS_ARCH)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x, mask=torch.tensor(MASK, dtype=torch.bool))
        out = model(x, mask=MASK)
    torch.testing.assert_close(out[-1], ref[-1], rtol=0, atol=0)
    with pytest.raises(ValueError, match='mask leaves no visible unit'):
        model(x, mask=[[1, 1, 1, 1], [1, 0, 1, 0]])
    with pytest.raises(ValueError, match='mask must be binary'):
        model(x, mask=[[0, 0.3, 1, 0], [1, 0, 1, 0]])
    with pytest.raises(ValueError, match=r'expected \(B, 3, H, W\) images'):
        model(x[0], mask=MASK[:1])


def test_greenmim_loss_refuses_an_image_without_a_batch_dimension():
    """Not read as 3 samples of 1 channel: the backbone names the shape."""
    model = MODELS.build(_greenmim_cfg(mask_ratio=0.5))
    with pytest.raises(ValueError, match=re.escape(
            'expected (B, 3, H, W) images, got shape (3, 64, 64)')):
        model.loss(torch.randn(3, 64, 64), None)
