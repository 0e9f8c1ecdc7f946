"""One non-finite sample must not change the other samples' outputs."""
import pytest
import torch

import greenmim_mm.models.backbones.green_swin as green_swin_mod
import greenmim_mm.models.backbones.green_twins as green_twins_mod
from greenmim_mm.models import GreenSVT, GreenSwinTransformer
from greenmim_mm.models.utils import random_unit_mask


def _swin():
    return GreenSwinTransformer(
        arch=dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4]),
        window_size=7, out_indices=(0, 1, 2, 3))


def _svt():
    return GreenSVT(
        arch=dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 1, 2],
                  num_heads=[1, 2, 2, 4], patch_sizes=[4, 2, 2, 2],
                  strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                  sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
        out_indices=(0, 1, 2, 3))


def _poisoned(build, value):
    torch.manual_seed(0)
    model = build()
    model.eval()  # mmpretrain backbones' train() returns None
    img = torch.randn(4, 3, 224, 224)
    mask = random_unit_mask(4, (7, 7), 0.5, generator=torch.Generator()
                            .manual_seed(1))
    # a visible pixel of sample 1
    unit = int((~mask[1]).nonzero()[0])
    bad = img.clone()
    bad[1, 0, (unit // 7) * 32 + 5, (unit % 7) * 32 + 9] = value
    with torch.no_grad():
        return model(img, mask=mask), model(bad, mask=mask)


@pytest.mark.parametrize('build', [_swin, _svt], ids=['swin', 'svt'])
@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_a_non_finite_pixel_stays_in_its_sample(build, value):
    clean, bad = _poisoned(build, value)
    keep = [0, 2, 3]
    for c, b in zip(clean, bad):
        assert torch.isnan(b[1]).all()  # the bad sample: NaN, as dense
        torch.testing.assert_close(b[keep], c[keep], rtol=0, atol=1e-6)


@pytest.mark.parametrize('build,mod', [(_swin, green_swin_mod),
                                       (_svt, green_twins_mod)],
                         ids=['swin', 'svt'])
def test_without_isolation_the_batch_is_spoiled(build, mod, monkeypatch):
    """The guarded property is real: grouping mixes samples, and a NaN in
    one sample reaches the others when it is not isolated."""
    monkeypatch.setattr(mod, 'isolate_nonfinite',
                        lambda x: (x, torch.zeros(x.shape[0], dtype=bool)))
    _, bad = _poisoned(build, float('nan'))
    assert not torch.isfinite(bad[-1][[0, 2, 3]]).all()
