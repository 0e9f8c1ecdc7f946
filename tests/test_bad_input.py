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
