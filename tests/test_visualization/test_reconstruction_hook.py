"""ReconstructionVisHook in a short training run of a tiny demo model."""
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from greenmim_mm.engine import ReconstructionVisHook

DEMO_CFG = 'greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py'


def test_bad_arguments():
    with pytest.raises(ValueError, match='interval'):
        ReconstructionVisHook(interval=0)
    with pytest.raises(ValueError, match='num_images'):
        ReconstructionVisHook(num_images=1.5)
    with pytest.raises(ValueError, match='mask_ratio'):
        ReconstructionVisHook(mask_ratio=1.0)


def test_demo_config_enables_the_hook(repo_root):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(repo_root, 'configs', DEMO_CFG))
    assert [h.type for h in cfg.custom_hooks] == ['ReconstructionVisHook']


def test_hook_writes_comparable_grids(repo_root, demo_data, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(osp.join(repo_root, 'configs', DEMO_CFG))
    cfg.merge_from_dict({
        'model.backbone.arch': dict(_delete_=True, embed_dims=8,
                                    depths=[2, 2, 2, 2],
                                    num_heads=[1, 1, 1, 1]),
        'model.neck.in_channels': 64,
        'model.neck.embed_dims': 16,
        'model.neck.num_heads': 2,
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.dataset.data_root': demo_data,
        'train_cfg.max_epochs': 1,
        'default_hooks.checkpoint.interval': 10,
        'default_hooks.checkpoint.save_last': False,
    })
    cfg.custom_hooks = [dict(type='ReconstructionVisHook', interval=2,
                             num_images=3, seed=1)]
    cfg.work_dir = str(tmp_path)
    Runner.from_cfg(cfg).train()  # 32 images / 8 = 4 iterations
    grids = []
    for it in (2, 4):
        with Image.open(tmp_path / 'vis' / f'iter_{it:06d}.png') as img:
            grids.append(np.array(img))
    assert not (tmp_path / 'vis' / 'iter_000001.png').exists()
    # 3 rows of 4 panels of 224 px, gaps of 4, title header of 14
    assert grids[0].shape == (14 + 3 * 224 + 4 * 4, 4 * 224 + 5 * 4, 3)
    # same images and same mask (original and masked panels), while the
    # reconstruction follows the training
    left = slice(0, 2 * 228 + 4)
    assert np.array_equal(grids[0][:, left], grids[1][:, left])
    assert not np.array_equal(grids[0][:, left.stop:],
                              grids[1][:, left.stop:])
