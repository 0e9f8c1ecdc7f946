"""StepAudit catches each fault it looks for, and only that (negative
controls), and audit_training_step reports a clean warm GreenMIM step."""
import pytest
import torch

from greenmim_mm.analysis import KINDS, StepAudit, audit_training_step


def _run(fn, late=True):
    audit = StepAudit('meta', late_copies=late)
    with audit:
        try:
            fn()
        except (NotImplementedError, RuntimeError):
            pass  # meta has no data: the op was still dispatched
    return audit.counts()


def _only(kind, n=1):
    return {k: (n if k == kind else 0) for k in KINDS}


x = torch.empty(4, device='meta')


def test_sync_is_caught_and_plain_reduction_is_not():
    assert _run(lambda: (x.sum() > 0).item()) == _only('sync')
    assert _run(lambda: x.nonzero()) == _only('sync')
    assert _run(lambda: x.sum() > 0) == _only(None)
    m = torch.empty(4, dtype=torch.bool, device='meta')
    assert _run(lambda: x[m]) == _only('sync')  # boolean indexing
    assert _run(lambda: x.__setitem__(m, 0.0)) == _only('sync')
    assert _run(lambda: x.masked_fill(m, 0.0)) == _only(None)
    assert _run(lambda: x[torch.zeros(2, dtype=torch.long,
                                      device='meta')]) == _only(None)


def test_blocking_copy_is_caught_and_non_blocking_one_is_not():
    assert _run(lambda: torch.ones(4).to('meta')) == \
        _only('blocking_h2d_copy')
    assert _run(lambda: torch.ones(4).to('meta', non_blocking=True)) == \
        _only(None)
    # copy_ with non_blocking passed positionally
    y = torch.empty(4, device='meta')
    assert _run(lambda: y.copy_(torch.ones(4), True)) == _only(None)
    assert _run(lambda: y.copy_(torch.ones(4))) == _only('blocking_h2d_copy')


def test_late_copy_is_caught_only_after_a_device_computation():
    def late():
        _ = x + 1
        torch.ones(4).to('meta', non_blocking=True)

    def early():
        torch.ones(4).to('meta', non_blocking=True)
        _ = x + 1

    assert _run(late) == _only('late_h2d_copy')
    assert _run(early) == _only(None)
    assert _run(late, late=False) == _only(None)


def test_cpu_tensor_in_device_op_is_caught_but_not_a_cpu_scalar():
    assert _run(lambda: x[torch.tensor([0, 2])]) == \
        _only('cpu_tensor_in_device_op')
    assert _run(lambda: x[torch.tensor([0, 2], device='meta')]) == \
        _only(None)
    assert _run(lambda: x * torch.tensor(2.0)) == _only(None)


def test_host_work_is_not_a_device_op():
    audit = StepAudit('meta')
    with audit:
        a = torch.arange(10)
        (a * 2).nonzero().sum().item()  # syncs nothing: all on the host
    assert audit.device_ops == 0 and audit.problems == []


@pytest.mark.parametrize('batch', [2])
def test_audit_training_step_tiny_greenmim(batch):
    from mmpretrain.registry import MODELS

    import greenmim_mm  # noqa: F401
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='GreenMIM', mask_ratio=0.75,
        backbone=dict(type='GreenSwinTransformer',
                      arch=dict(embed_dims=32, depths=[2, 2, 2, 2],
                                num_heads=[1, 2, 2, 4])),
        neck=dict(type='GreenMIMDecoder', in_channels=256, embed_dims=64,
                  num_heads=4),
        head=dict(type='GreenMIMHead', norm_pix=True, patch_size=32,
                  loss=dict(type='PixelReconstructionLoss',
                            criterion='L2'))))
    res = audit_training_step(model, batch, 224, steps=2)
    warm = res[-1]
    assert warm['device_ops'] > 100
    assert {k: warm[k] for k in KINDS} == _only(None), warm['problems']
    # the first step only fills per-grid caches: no sync, no blocking copy
    assert res[0]['sync'] == res[0]['blocking_h2d_copy'] == 0
