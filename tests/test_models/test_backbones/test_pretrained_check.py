"""A Pretrained checkpoint of the wrong architecture raises, a right one
loads (through the module's own load hooks and the safe loader)."""
import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import greenmim_mm  # noqa: F401
from greenmim_mm.models.backbones import (GreenSwinTransformer,
                                          load_pretrained_checked)

TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])


def _swin(arch=TINY, **kw):
    return GreenSwinTransformer(arch=arch, img_size=64, **kw)


def _save(tmp_path, backbone, name='ckpt.pth'):
    """A Runner-like GreenMIM checkpoint (backbone. + neck. keys, mmengine
    objects in meta/message_hub: needs the safe loader)."""
    state = {'backbone.' + k: v for k, v in backbone.state_dict().items()}
    state['neck.mask_token'] = torch.zeros(1, 1, 8)
    buf = HistoryBuffer()
    buf.update(1.0)
    path = tmp_path / name
    torch.save(dict(state_dict=state, meta=dict(seed=np.int64(0)),
                    message_hub=dict(log_scalars={'loss': buf})), path)
    return str(path)


@pytest.fixture(scope='module')
def src():
    torch.manual_seed(0)
    return _swin()


def test_matching_checkpoint_loads_every_tensor(src, tmp_path):
    ckpt = _save(tmp_path, src)
    model = _swin(init_cfg=dict(type='Pretrained', checkpoint=ckpt,
                                prefix='backbone.'))
    model.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_extra_out_indices_only_warn(src, tmp_path):
    """mmdet's out_indices=(0, 1, 2, 3) adds norm0..norm2: legit."""
    model = _swin(out_indices=(0, 1, 2, 3))
    report = load_pretrained_checked(model, _save(tmp_path, src),
                                     prefix='backbone.')
    assert sorted(report.missing) == sorted(
        f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias'))
    assert torch.equal(model.norm3.weight, src.norm3.weight)


def test_other_image_size_is_resized_by_the_load_hooks(tmp_path):
    """Swin's load pre-hook resizes the absolute position embedding."""
    torch.manual_seed(0)
    src = _swin(use_abs_pos_embed=True)
    model = GreenSwinTransformer(arch=TINY, img_size=96,
                                 use_abs_pos_embed=True)
    report = load_pretrained_checked(model, _save(tmp_path, src),
                                     prefix='backbone.')
    assert report.missing == []
    assert model.absolute_pos_embed.shape[1] == (96 // 4)**2
    assert src.absolute_pos_embed.shape[1] == (64 // 4)**2


def test_wrong_width_names_checkpoint_class_and_keys(src, tmp_path):
    ckpt = _save(tmp_path, src)
    model = _swin(arch=dict(TINY, embed_dims=48),
                  init_cfg=dict(type='Pretrained', checkpoint=ckpt,
                                prefix='backbone.'))
    with pytest.raises(ValueError) as e:
        model.init_weights()
    msg = str(e.value)
    assert ckpt in msg and 'GreenSwinTransformer' in msg
    assert 'wrong shape' in msg and 'patch_embed.projection.weight' in msg


def test_too_few_parameters_found(src, tmp_path):
    deeper = _swin(arch=dict(TINY, depths=[2, 2, 6, 2]))
    with pytest.raises(ValueError, match=r'only \d+ of its \d+ parameters'
                       r'.*stages\.2\.blocks\.2'):
        load_pretrained_checked(deeper, _save(tmp_path, src),
                                prefix='backbone.')


def test_unexpected_keys(src, tmp_path):
    shallow = _swin(arch=dict(TINY, depths=[2, 2, 1, 2]))
    with pytest.raises(ValueError, match=r'keys are not in the model '
                       r'\(stages\.2\.blocks\.1\.'):
        load_pretrained_checked(shallow, _save(tmp_path, src),
                                prefix='backbone.')


def test_forgotten_or_wrong_prefix(src, tmp_path):
    ckpt = _save(tmp_path, src)
    with pytest.raises(ValueError, match="prefix='backbone.'"):
        load_pretrained_checked(_swin(), ckpt)
    with pytest.raises(ValueError, match="no key under prefix 'encoder.'"):
        load_pretrained_checked(_swin(), ckpt, prefix='encoder')


def test_bad_init_cfg_and_corrupt_file(src, tmp_path):
    ckpt = _save(tmp_path, src)
    model = _swin(init_cfg=dict(type='Pretrained', checkpoint=ckpt,
                                prefix='backbone.', strict=True))
    with pytest.raises(ValueError, match='takes checkpoint, prefix'):
        model.init_weights()
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(open(ckpt, 'rb').read()[:1000])
    with pytest.raises(RuntimeError, match='truncated or corrupt'):
        load_pretrained_checked(_swin(), str(bad), prefix='backbone.')
