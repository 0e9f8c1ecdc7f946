"""tools/benchmark.py: the planning report (the timed steps run in CI of
the benchmark itself, not here)."""
from benchmark import main


def test_plan_only_reports_time_and_waste_per_windowed_stage():
    res = main(['--plan-only', '--batch-size', '2', '--steps', '2'])
    assert res['plan_ms'] > 0
    # Swin-B at 224 px: stages 1-3 are windowed (regular and shifted),
    # stage 4 (7x7) is one window and has no grouping
    assert set(res['padding_waste']) == {
        f'stage{i}/{k}' for i in (1, 2, 3) for k in ('regular', 'shifted')}
    assert all(0 <= w < 1 for w in res['padding_waste'].values())
