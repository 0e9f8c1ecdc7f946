import copy
import pickle

import torch
from mmengine.logging import MessageHub

from greenmim_mm.models.selfsup.plan_prefetch import (PlanPrefetcher,
                                                      iteration_generator)
from test_greenmim import _model, _smooth_images  # noqa: E402


def _run(model, iters, batches):
    hub = MessageHub.get_current_instance()
    losses, masks = [], []
    for it, imgs in zip(iters, batches):
        hub.update_info('iter', it)
        seen = []
        orig = model.backbone.forward

        def spy(x, mask=None, plans=None):
            seen.append((mask.clone(), plans))
            return orig(x, mask=mask, plans=plans)

        model.backbone.forward = spy
        try:
            losses.append(model.loss(imgs, None)['loss'].item())
        finally:
            del model.backbone.forward
        masks.append(seen[0])
    return losses, masks


def test_prefetched_masks_and_plans_equal_inline_ones():
    torch.manual_seed(0)
    ref = _model()
    ref.init_weights()
    pre = _model()
    pre.load_state_dict(ref.state_dict())
    pre.prefetch_plans = True
    served = []  # iterations the prefetcher served
    take = pre._prefetcher.take

    def spy_take(key):
        got = take(key)
        if got is not None:
            served.append(key[-1])
        return got

    pre._prefetcher.take = spy_take
    for model in (ref, pre):  # no drop path: the runs draw nothing else
        for m in model.modules():
            if hasattr(m, 'drop_prob'):
                m.drop_prob = 0.0
    imgs = [_smooth_images(2), _smooth_images(2), _smooth_images(3),
            _smooth_images(3)]
    iters = [10, 11, 12, 13]
    want, ref_masks = _run(ref, iters, imgs)
    got, pre_masks = _run(pre, iters, imgs)
    assert got == want
    for (m_ref, p_ref), (m_pre, p_pre) in zip(ref_masks, pre_masks):
        assert torch.equal(m_ref, m_pre)
        assert p_ref is None  # without prefetch the backbone plans inline
        assert p_pre is not None
    # iteration 11 was planned during 10, 12 (a new batch size) inline,
    # 13 during 12: the prefetcher served exactly 11 and 13
    assert served == [11, 13]


def test_iteration_masks_are_reproducible():
    a = torch.rand(5, generator=iteration_generator(3, 11))
    b = torch.rand(5, generator=iteration_generator(3, 11))
    c = torch.rand(5, generator=iteration_generator(3, 12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prefetcher_matches_keys_and_copies_empty():
    p = PlanPrefetcher()
    assert p.take('a') is None
    p.submit(('k', 1), lambda: 41 + 1)
    assert p.take(('k', 2)) is None  # another key: dropped
    p.submit(('k', 2), lambda: 7)
    q = copy.deepcopy(p)
    r = pickle.loads(pickle.dumps(p))
    assert q.take(('k', 2)) is None and r.take(('k', 2)) is None
    assert p.take(('k', 2)) == 7
