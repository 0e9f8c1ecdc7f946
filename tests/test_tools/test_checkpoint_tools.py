import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmcv.cnn.bricks.transformer import PatchMerging
from mmpretrain.models import SwinTransformer
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401
from convert_official import (build_model, check_against, convert,
                              detect, merge_order_to_unfold)
from extract_backbone import extract
from extract_backbone import main as extract_main


def _unfold_to_merge_order(t):
    c = t.shape[-1] // 4
    out = torch.empty_like(t)
    for pos, k in enumerate([0, 2, 1, 3]):  # concat pos -> unfold slot
        out[..., pos * c:(pos + 1) * c] = t[..., k::4]
    return out


def _official_from(model):
    """Write a SwinTransformer's weights in the authors' layout."""
    rules = {
        'attn.w_msa.qkv': 'attn.qkv', 'attn.w_msa.proj': 'attn.proj',
        'attn.w_msa.relative_position_bias_table':
        'attn.relative_position_bias_table',
        'attn.w_msa.relative_position_index': 'attn.relative_position_index',
        'ffn.layers.0.0': 'mlp.fc1', 'ffn.layers.1': 'mlp.fc2'
    }
    out = {}
    for k, v in model.state_dict().items():
        n = k.replace('stages.', 'layers.').replace(
            'patch_embed.projection', 'patch_embed.proj').replace(
                'norm3.', 'norm.')
        for a, b in rules.items():
            n = n.replace(a, b)
        if 'downsample' in n:
            v = _unfold_to_merge_order(v)
        out['encoder.' + n] = v.clone()
    out['encoder.layers.0.blocks.1.attn_mask'] = torch.zeros(64, 49, 49)
    out['decoder_embed.weight'] = torch.zeros(4, 4)
    out['mask_token'] = torch.zeros(1, 1, 4)
    return out


def test_converter_round_trips_official_layout():
    torch.manual_seed(0)
    model = SwinTransformer(arch='tiny')
    converted, skipped = convert(_official_from(model))
    assert sorted(skipped) == ['decoder_embed.weight', 'mask_token']
    assert set(converted) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(converted[k], v), k
    check_against(converted, SwinTransformer(arch='tiny'))


def test_merge_reorder_matches_swin_concat_merging():
    torch.manual_seed(0)
    c = 6
    merge = PatchMerging(c, 2 * c)
    x = torch.randn(2, 4, 4, c)
    x0, x1 = x[:, 0::2, 0::2], x[:, 1::2, 0::2]
    x2, x3 = x[:, 0::2, 1::2], x[:, 1::2, 1::2]
    cat = torch.cat([x0, x1, x2, x3], -1).view(2, 4, 4 * c)  # Swin's order
    w = torch.randn(2 * c, 4 * c)
    g, b = torch.randn(4 * c), torch.randn(4 * c)
    official = torch.nn.functional.layer_norm(cat, (4 * c, ), g, b) @ w.T
    with torch.no_grad():
        merge.reduction.weight.copy_(merge_order_to_unfold(w))
        merge.norm.weight.copy_(merge_order_to_unfold(g))
        merge.norm.bias.copy_(merge_order_to_unfold(b))
        ours, _ = merge(x.view(2, 16, c), (4, 4))
    torch.testing.assert_close(ours, official)


def test_converter_rejects_unknown_keys_and_shapes():
    state = _official_from(SwinTransformer(arch='tiny'))
    with pytest.raises(KeyError, match='not in the official'):
        convert({**state, 'encoder.layers.0.blocks.0.attn.foo': torch.ones(1)})
    with pytest.raises(KeyError, match='not in the official'):
        convert({**state, 'head.weight': torch.ones(1)})
    converted, _ = convert(state)
    with pytest.raises(ValueError, match='missing'):
        check_against(converted, SwinTransformer(arch='small'))  # 18 blocks
    bad = dict(converted)
    bad['patch_embed.projection.weight'] = torch.zeros(96, 3, 8, 8)
    with pytest.raises(ValueError, match='patch_embed.projection.weight'):
        check_against(bad, build_model(detect(converted)))


def test_extracted_backbone_loads_strictly_with_weights_only(tmp_path):
    model = MODELS.build(
        dict(type='GreenMIM',
             backbone=dict(type='GreenSwinTransformer', arch='tiny'),
             neck=dict(type='GreenMIMDecoder', in_channels=768),
             head=dict(type='GreenMIMHead')))
    src = tmp_path / 'pretrain.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 3}},
               src)
    dst = tmp_path / 'backbone.pth'
    extract_main([str(src), str(dst)])
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    swin = SwinTransformer(arch='tiny')
    swin.load_state_dict(ckpt['state_dict'], strict=True)
    for k, v in swin.state_dict().items():
        assert torch.equal(v, model.backbone.state_dict()[k])
    with pytest.raises(KeyError, match='No "backbone." weights'):
        extract({'encoder.x': torch.ones(1)})


def _pretrain_ckpt(path, mask_token=False):
    """A tiny GreenMIM-like Runner checkpoint (optimizer, decoder)."""
    state = {'backbone.patch_embed.projection.weight': torch.randn(4, 3, 4, 4),
             'neck.decoder_pred.weight': torch.randn(8, 4)}
    if mask_token:  # as mmpretrain's SimMIMSwinTransformer
        state['backbone.mask_token'] = torch.zeros(1, 1, 4)
    torch.save({'state_dict': state, 'optimizer': {'state': {}},
                'meta': {'epoch': 1}}, path)
    return path.read_bytes()


@pytest.mark.parametrize('link', ['same', 'hard', 'sym', 'dot'])
def test_extract_backbone_refuses_to_overwrite_its_input(tmp_path, link):
    from greenmim_mm.utils_io import OverwriteInputError
    src = tmp_path / 'a.pth'
    before = _pretrain_ckpt(src)
    dst = {'same': src, 'dot': tmp_path / '.' / 'a.pth',
           'hard': tmp_path / 'hard.pth', 'sym': tmp_path / 'sym.pth'}[link]
    if link == 'hard':
        os.link(src, dst)
    elif link == 'sym':
        os.symlink(src, dst)
    with pytest.raises(OverwriteInputError, match='refusing to overwrite'):
        extract_main([str(src), str(dst)])
    assert src.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted(
        {'a.pth', osp.basename(dst)})  # no temporary file left


def test_extract_backbone_cli_exits_non_zero(tmp_path, repo_root):
    src = tmp_path / 'a.pth'
    before = _pretrain_ckpt(src)
    proc = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools', 'extract_backbone.py'),
         str(src), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'OverwriteInputError' in proc.stderr and 'a.pth' in proc.stderr
    assert src.read_bytes() == before


def test_extract_backbone_drops_simmim_mask_token(tmp_path):
    src, dst = tmp_path / 'simmim.pth', tmp_path / 'backbone.pth'
    _pretrain_ckpt(src, mask_token=True)
    with pytest.warns(UserWarning, match=r"backbone\.mask_token"):
        extract_main([str(src), str(dst)])
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(ckpt['state_dict']) == {'patch_embed.projection.weight'}
    with pytest.warns(UserWarning, match='mask_token'):
        kept = extract(torch.load(src, weights_only=True)['state_dict'],
                       keep_prefix=True)
    assert set(kept) == {'backbone.patch_embed.projection.weight'}


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    from greenmim_mm.utils_io import atomic_write
    dst = tmp_path / 'sub' / 'out.bin'
    with atomic_write(dst) as tmp:
        assert osp.dirname(tmp) == str(tmp_path / 'sub')  # folder created
        with open(tmp, 'wb') as f:
            f.write(b'old')
    with pytest.raises(RuntimeError, match='boom'):
        with atomic_write(dst) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'half')
            raise RuntimeError('boom')
    assert dst.read_bytes() == b'old'
    assert os.listdir(tmp_path / 'sub') == ['out.bin']

    old = os.umask(0o022)
    try:  # the usual permissions, not mkstemp's 0600
        with atomic_write(dst) as tmp:
            open(tmp, 'wb').close()
    finally:
        os.umask(old)
    assert dst.stat().st_mode & 0o777 == 0o644
