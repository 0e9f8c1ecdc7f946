# Swin-B with window 14, laid out as the paper's Swin-B/w14: window 14 in
# stages 1-3 and window 7 in the last stage, whose map is 7x7 at 224 px
# (the authors' Swin clips a window to a map no larger than it, so their
# last-stage bias tables are 13x13). Ours and the authors' w14 checkpoints
# then share one layout. Stage 3 (14x14) is one unshifted window and stage 4
# one window of 7: both use plain attention on the visible tokens.
_base_ = './greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py'

# stage_cfgs is a list here, which replaces the sibling's dict: repeat its
# LayerNorm settings in every stage
paper_stage = dict(
    block_cfgs=dict(norm_cfg={{_base_.paper_ln}}),
    downsample_cfg=dict(norm_cfg={{_base_.paper_ln}}))
model = dict(
    backbone=dict(
        window_size=14,
        stage_cfgs=[
            paper_stage, paper_stage, paper_stage,
            dict(paper_stage, window_size=7)
        ]))
