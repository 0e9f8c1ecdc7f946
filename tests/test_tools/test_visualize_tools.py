"""tools/visualize_reconstruction.py and tools/visualize_grouping.py end to
end, on the demo photos with a tiny GreenMIM checkpoint."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

DEMO_CFG = 'greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py'
TINY = """_base_ = {base!r}
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=8,
                            depths=[2, 2, 2, 2], num_heads=[1, 1, 1, 1])),
    neck=dict(in_channels=64, embed_dims=16, num_heads=2))
"""


@pytest.fixture(scope='module')
def tiny(repo_root, tmp_path_factory):
    """A tiny demo-config variant and a ``{'state_dict': ...}`` checkpoint."""
    from greenmim_mm.visualization import load_model
    root = tmp_path_factory.mktemp('tiny')
    cfg = root / 'tiny_demo.py'
    cfg.write_text(TINY.format(
        base=osp.join(repo_root, 'configs', DEMO_CFG)))
    model = load_model(str(cfg))
    ckpt = root / 'tiny.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    return str(cfg), str(ckpt), model


def test_visualize_reconstruction(tiny, demo_data, tmp_path):
    from visualize_reconstruction import main
    cfg, ckpt, _ = tiny
    folder = osp.join(demo_data, 'train')
    out = tmp_path / 'vis'
    written = main([cfg, ckpt, folder, '--out', str(out), '--max-images',
                    '2', '--seed', '1', '--mask-ratio', '0.5'])
    images = sorted(glob.glob(osp.join(folder, '*.jpg')))[:2]
    assert written == [
        str(out / (osp.splitext(osp.basename(p))[0] + '.png'))
        for p in images
    ]
    for path in written:
        with Image.open(path) as img:
            # 4 panels of 224 px + gaps of 4, one row plus a title header
            assert img.size == (4 * 224 + 5 * 4, 14 + 224 + 2 * 4)
            arr = torch.from_numpy(np.array(img))
        masked = arr[18:18 + 224, 4 + 228:4 + 228 + 224]
        grey = (masked == 128).all(-1).reshape(7, 32, 7, 32).all(3).all(1)
        assert int(grey.sum()) == 49 - 24  # ratio 0.5 keeps 24 units
    # the same seed gives the same picture
    again = main([cfg, ckpt, images[0], '--out', str(tmp_path / 'again'),
                  '--seed', '1', '--mask-ratio', '0.5'])
    with Image.open(again[0]) as a, Image.open(written[0]) as b:
        assert a.tobytes() == b.tobytes()


def test_visualize_reconstruction_bad_input(tiny, tmp_path):
    from visualize_reconstruction import main
    cfg, ckpt, _ = tiny
    with pytest.raises(FileNotFoundError, match='neither an image'):
        main([cfg, ckpt, str(tmp_path / 'nothing')])
    with pytest.raises(ValueError, match='mask_ratio'):
        main([cfg, ckpt, str(tmp_path), '--mask-ratio', '1.5'])
    with pytest.raises(FileNotFoundError, match='Checkpoint'):
        main([cfg, str(tmp_path / 'missing.pth'), str(tmp_path)])


def test_visualize_grouping(tiny, demo_data, tmp_path):
    from visualize_grouping import main
    cfg = tiny[0]
    image = sorted(glob.glob(osp.join(demo_data, 'train', '*.jpg')))[0]
    out = main(['--config', cfg, '--image', image, '--seed', '2', '--dpi',
                '30', '--out', str(tmp_path / 'grouping.png')])
    with Image.open(out) as img:
        # Swin with 4 stages at 224 px, window 7: 3 stages x (regular,
        # shifted) + the last stage (one window): 7 rows
        assert img.size == (9 * 30, round((2.7 * 7 + 0.5) * 30))
    out = main(['--arch', 'tiny', '--img-size', '64', '--window', '2',
                '--dpi', '30', '--out', str(tmp_path / 'arch.png')])
    with Image.open(out) as img:
        assert img.size[0] == 9 * 30
