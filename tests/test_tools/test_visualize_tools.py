"""tools/visualize_reconstruction.py and tools/visualize_grouping.py end to
end, on the demo photos with a tiny GreenMIM checkpoint."""
import glob
import os
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
    assert written == [str(out / (osp.basename(p) + '.png'))
                       for p in images]
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
    Image.new('RGB', (32, 32)).save(tmp_path / 'x.jpg')
    with pytest.raises(FileNotFoundError, match='Checkpoint'):
        main([cfg, str(tmp_path / 'missing.pth'), str(tmp_path / 'x.jpg'),
              '--out', str(tmp_path / 'vis')])


def _photos(folder, names):
    """Distinct small photos; returns their bytes by name."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
                        ).save(folder / name)
    return {n: (folder / n).read_bytes() for n in names}


def test_visualize_reconstruction_never_overwrites_inputs(tiny, tmp_path):
    from greenmim_mm.utils_io import OverwriteInputError
    from visualize_reconstruction import main
    cfg, ckpt, _ = tiny
    src = tmp_path / 'imgs'
    before = _photos(src, ['x.jpg', 'x.png', 'y.png.png'])
    # y.png.png would be the output name of y.png: the folder is refused
    for out in [src, tmp_path / 'imgs' / '.', tmp_path / 'link']:
        if out.name == 'link':
            os.symlink(src, out)
        with pytest.raises(OverwriteInputError, match='image folder'):
            main([cfg, ckpt, str(src), '--out', str(out)])
    with pytest.raises(OverwriteInputError, match='refusing to overwrite'):
        main([cfg, ckpt, str(src / 'x.png'), '--out', str(src / 'x.png')])
    with pytest.raises(NotADirectoryError, match='is a file'):
        main([cfg, ckpt, str(src / 'x.png'), '--out', str(src / 'x.jpg')])
    assert {n: (src / n).read_bytes() for n in before} == before
    assert sorted(os.listdir(src)) == sorted(before)
    # x.jpg and x.png: two outputs, each drawn from its own image
    out = tmp_path / 'vis'
    written = main([cfg, ckpt, str(src), '--out', str(out), '--seed', '3'])
    assert written == [str(out / n) for n in
                       ['x.jpg.png', 'x.png.png', 'y.png.png.png']]
    assert sorted(os.listdir(out)) == sorted(osp.basename(w)
                                             for w in written)
    one = main([cfg, ckpt, str(src / 'x.png'), '--out',
                str(tmp_path / 'one'), '--seed', '4'])  # x.png is image 1
    with Image.open(written[0]) as a, Image.open(written[1]) as b, \
            Image.open(one[0]) as c:
        assert a.tobytes() != b.tobytes()
        assert b.tobytes() == c.tobytes()
    assert {n: (src / n).read_bytes() for n in before} == before


def test_visualize_reconstruction_loads_strictly(tiny, tmp_path):
    from extract_backbone import main as extract_main
    from visualize_reconstruction import main
    cfg, ckpt, model = tiny
    src = tmp_path / 'imgs'
    _photos(src, ['x.jpg'])
    out = str(tmp_path / 'vis')
    backbone = tmp_path / 'backbone.pth'
    extract_main([ckpt, str(backbone)])
    for keep in ([], ['--keep-prefix']):
        extract_main([ckpt, str(backbone), *keep])
        with pytest.raises(ValueError, match='this checkpoint has no '
                           'decoder; pass a full GreenMIM pretraining '
                           'checkpoint') as e:
            main([cfg, str(backbone), str(src), '--out', out])
        assert 'backbone.pth' in str(e.value)
        assert 'neck.' in str(e.value)  # names what is missing
    state = model.state_dict()
    some = next(k for k in state if k.startswith('neck.'))
    cases = {
        'missing': ({k: v for k, v in state.items() if k != some}, some),
        'unexpected': ({**state, 'neck.extra.weight': torch.ones(1)},
                       'neck.extra.weight'),
        'shape': ({**state, some: torch.zeros(1)}, some),
        'unrelated': ({'encoder.x': torch.ones(1)}, 'encoder.x'),
    }
    for name, (bad, key) in cases.items():
        path = tmp_path / f'{name}.pth'
        torch.save({'state_dict': bad}, path)
        with pytest.raises(ValueError, match=name + '.pth') as e:
            main([cfg, str(path), str(src), '--out', out])
        assert key in str(e.value), name
    assert not osp.exists(out)  # nothing drawn from a random model
    # a DDP 'module.' prefix is not a mismatch
    path = tmp_path / 'ddp.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in state.items()}},
               path)
    assert len(main([cfg, str(path), str(src), '--out', out])) == 1


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


def test_visualize_grouping_output_path(tmp_path):
    from visualize_grouping import main
    args = ['--arch', 'tiny', '--img-size', '64', '--window', '2', '--dpi',
            '20']
    out = tmp_path / 'new' / 'deeper' / 'g.png'  # folders are created
    assert main(args + ['--out', str(out)]) == str(out)
    with Image.open(out) as img:
        assert img.format == 'PNG'
    assert os.listdir(out.parent) == ['g.png']  # no temporary file left
    for name in ['g.jpg', 'g', 'g.png.jpg']:
        with pytest.raises(ValueError, match='must end with .png'):
            main(args + ['--out', str(tmp_path / name)])
        assert not osp.exists(tmp_path / name)
    image = tmp_path / 'photo.png'
    Image.new('RGB', (64, 64), (9, 9, 9)).save(image)
    before = image.read_bytes()
    with pytest.raises(ValueError, match='refusing to overwrite'):
        main(args + ['--image', str(image), '--out', str(image)])
    assert image.read_bytes() == before


def test_visualisation_loads_a_checkpoint_of_another_window(tiny, tmp_path):
    """A window-7 GreenMIM checkpoint in a window-14 config (last stage 7):
    the tools' strict load resizes the bias tables with torch (mmpretrain's
    own resize needs SciPy's removed interp2d) and keeps every other
    tensor."""
    from greenmim_mm.models.backbones.bias_resize import \
        resize_rel_pos_bias_table
    from greenmim_mm.visualization import load_model
    cfg7, ckpt7, model7 = tiny
    cfg14 = tmp_path / 'tiny_w14.py'
    cfg14.write_text(f'_base_ = {cfg7!r}\nmodel = dict(backbone=dict('
                     'window_size=14, stage_cfgs=[{}, {}, {}, '
                     'dict(window_size=7)]))\n')
    model14 = load_model(str(cfg14), ckpt7)
    src, got = model7.state_dict(), model14.state_dict()
    assert set(src) == set(got)
    key = 'backbone.stages.{}.blocks.0.attn.w_msa.relative_position_bias_table'
    assert got[key.format(0)].shape == (27 * 27, 1)
    torch.testing.assert_close(
        got[key.format(0)], resize_rel_pos_bias_table(src[key.format(0)], 14))
    for k, v in src.items():
        if 'relative_position' not in k or k.startswith('backbone.stages.3'):
            assert torch.equal(got[k], v), k
    # a table that cannot be a bias table is still refused, naming the file
    bad = dict(src)
    bad[key.format(1)] = torch.zeros(50, 1)
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': bad}, path)
    with pytest.raises(ValueError, match='bad.pth'):
        load_model(str(cfg14), str(path))
