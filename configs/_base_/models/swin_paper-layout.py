# The paper's Swin encoder layout, written once for the pretraining,
# fine-tuning (benchmarks/) and Mask R-CNN (mmdet/) configs. Only variables,
# no `model`: a config lists this file in `_base_` beside its own model base
# (mmdet's included; a local file adds no `_scope_`) and merges the
# variables into its backbone, e.g. `backbone=dict(..., **_base_.paper_swin)`.

# The paper's encoders use LayerNorm eps 1e-6 everywhere (patch embedding,
# blocks, patch merging, output norm); mmpretrain's Swin defaults to 1e-5.
# With it, our checkpoints and the authors' (converted with
# tools/convert_official.py) run identically in every config.
paper_ln = dict(type='LN', eps=1e-6)
paper_swin = dict(
    norm_cfg=paper_ln,
    patch_cfg=dict(norm_cfg=paper_ln),
    stage_cfgs=dict(
        block_cfgs=dict(norm_cfg=paper_ln),
        downsample_cfg=dict(norm_cfg=paper_ln)))

# The paper's Swin-B/L w14, on top of `paper_swin`: window 14 in stages 1-3
# and window 7 in the last stage, whose map is 7x7 at 224 px (the authors'
# Swin clips a window to a map no larger than it, so their last-stage bias
# tables are 13x13); ours and the authors' w14 checkpoints then share one
# layout. At 224 px stage 3 (14x14) is one unshifted window and stage 4 one
# window of 7: both use plain attention on the visible tokens, and no
# `pad_small_map` is needed. stage_cfgs is a list here, which replaces
# `paper_swin`'s dict, so each stage repeats its LayerNorm settings.
paper_swin_w14 = dict(
    window_size=14,
    stage_cfgs=[paper_swin['stage_cfgs']] * 3 +
    [dict(paper_swin['stage_cfgs'], window_size=7)])
