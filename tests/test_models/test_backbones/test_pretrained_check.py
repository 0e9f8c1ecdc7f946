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


# --- windows that change between pretraining and fine-tuning (issue 12) ---
TABLE = 'stages.0.blocks.0.attn.w_msa.relative_position_bias_table'


@pytest.mark.parametrize('w_src,w_dst', [(6, 7), (7, 14)])
def test_other_window_resizes_bias_tables(tmp_path, w_src, w_dst):
    """mmpretrain's own resize needs scipy's removed interp2d: ours is
    torch bicubic with align_corners=True, so the 4 corners of each
    head's (2w-1)^2 grid are kept exactly."""
    torch.manual_seed(0)
    src = _swin(window_size=w_src)
    with torch.no_grad():  # non-trivial tables (init is trunc_normal 0.02)
        for k, p in src.named_parameters():
            if k.endswith('relative_position_bias_table'):
                p.normal_()
    ckpt = _save(tmp_path, src)
    model = _swin(window_size=w_dst, pad_small_map=True,
                  init_cfg=dict(type='Pretrained', checkpoint=ckpt,
                                prefix='backbone.'))
    report = load_pretrained_checked(model, ckpt, prefix='backbone.')
    tables = [k for k in src.state_dict()
              if k.endswith('relative_position_bias_table')]
    assert sorted(r.split(' ')[0] for r in report.resized) == sorted(tables)
    assert f'{TABLE} (w{w_src} -> w{w_dst})' in report.resized
    s_src, s_dst = 2 * w_src - 1, 2 * w_dst - 1
    for k in tables:
        old = src.state_dict()[k]
        new = model.state_dict()[k]
        assert new.shape == (s_dst**2, old.shape[1]) and new.dtype == old.dtype
        old_g = old.t().reshape(-1, s_src, s_src)
        new_g = new.t().reshape(-1, s_dst, s_dst)
        for i, j in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
            torch.testing.assert_close(new_g[:, i, j], old_g[:, i, j],
                                       rtol=0, atol=1e-6)
        # every target node that lands on a source node keeps its value:
        # the corners, the centre (offset 0) and the edge midpoints
        on = [i for i in range(s_dst) if i * (s_src - 1) % (s_dst - 1) == 0]
        assert s_dst // 2 in on
        src_i = [i * (s_src - 1) // (s_dst - 1) for i in on]
        torch.testing.assert_close(new_g[:, on][:, :, on],
                                   old_g[:, src_i][:, :, src_i],
                                   rtol=0, atol=1e-6)
    # stale index buffers were dropped: the model keeps its own
    idx = TABLE.replace('bias_table', 'index')
    assert idx in report.dropped
    assert model.state_dict()[idx].shape == (w_dst**2, w_dst**2)
    # everything else is the checkpoint's, and the model runs
    for k, v in src.state_dict().items():
        if 'relative_position' not in k:
            assert torch.equal(model.state_dict()[k], v), k
    out = model(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(out[-1]).all()
    # the init_cfg path does the same
    model.init_weights()
    assert torch.equal(model.state_dict()[TABLE],
                       _resized(src.state_dict()[TABLE], w_dst))


def _resized(table, window):
    from greenmim_mm.models.backbones.bias_resize import \
        resize_rel_pos_bias_table
    return resize_rel_pos_bias_table(table, window)


def test_resize_is_identity_at_same_window_and_keeps_dtype():
    from greenmim_mm.models.backbones.bias_resize import \
        resize_rel_pos_bias_table
    t = torch.randn(13 * 13, 3, dtype=torch.float64)
    assert torch.equal(resize_rel_pos_bias_table(t, 7), t)
    # an independent per-head reference: bicubic of each 13x13 grid
    import torch.nn.functional as F
    out = resize_rel_pos_bias_table(t, 14)
    for h in range(3):
        ref = F.interpolate(t[:, h].reshape(1, 1, 13, 13), size=(27, 27),
                            mode='bicubic', align_corners=True)
        torch.testing.assert_close(out[:, h], ref.flatten(), rtol=0,
                                   atol=0)
    half = resize_rel_pos_bias_table(t.half(), 14)
    assert half.dtype == torch.float16 and half.shape == (27 * 27, 3)


def test_bad_bias_table_names_key_and_shapes(src, tmp_path):
    state = {'backbone.' + k: v for k, v in src.state_dict().items()}
    state['backbone.' + TABLE] = torch.zeros(12 * 12, 1)  # even side
    path = tmp_path / 'bad_table.pth'
    torch.save(dict(state_dict=state), path)
    with pytest.raises(ValueError) as e:
        load_pretrained_checked(_swin(), str(path), prefix='backbone.')
    msg = str(e.value)
    assert TABLE in msg and '(144, 1)' in msg and '(169, 1)' in msg
    assert str(path) in msg
    state['backbone.' + TABLE] = torch.zeros(11 * 11, 2)  # wrong heads
    torch.save(dict(state_dict=state), path)
    with pytest.raises(ValueError, match=rf'{TABLE} has 2 heads.*\(121, 2\)'
                       r'.*model 1.*\(169, 1\)'):
        load_pretrained_checked(_swin(), str(path), prefix='backbone.')


def test_simmim_checkpoint_drops_mask_token_with_warning(tmp_path,
                                                        monkeypatch):
    import logging
    from mmpretrain.models.selfsup.simmim import SimMIMSwinTransformer
    torch.manual_seed(0)
    simmim = SimMIMSwinTransformer(arch=TINY, img_size=64)
    assert 'mask_token' in simmim.state_dict()
    path = tmp_path / 'simmim.pth'
    torch.save({'state_dict': {'backbone.' + k: v
                               for k, v in simmim.state_dict().items()}},
               path)
    import greenmim_mm.models.backbones.pretrained_check as pc
    msgs = []
    monkeypatch.setattr(pc, 'print_log',
                        lambda msg, **kw: msgs.append((msg, kw.get('level'))))
    model = _swin()
    report = load_pretrained_checked(model, str(path), prefix='backbone.')
    assert report.dropped == ('mask_token', )
    assert any('mask_token' in m and 'SimMIM' in m and lv == logging.WARNING
               for m, lv in msgs), msgs
    for k, v in simmim.state_dict().items():
        if k != 'mask_token':
            assert torch.equal(model.state_dict()[k], v), k
    # any other extra key still raises
    state = torch.load(path)['state_dict']
    state['backbone.other_token'] = torch.zeros(1)
    torch.save({'state_dict': state}, path)
    with pytest.raises(ValueError, match=r'keys are not in the model '
                       r'\(other_token\)'):
        load_pretrained_checked(_swin(), str(path), prefix='backbone.')
