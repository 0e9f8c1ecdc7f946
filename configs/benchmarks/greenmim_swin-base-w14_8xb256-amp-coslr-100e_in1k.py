# Fine-tuning of a GreenMIM Swin-B window-14 model: ours
# (configs/greenmim_swin-base-w14_...in1k.py) or the paper's released one
# (tools/convert_official.py ... --prefix backbone.). Both use window 14 in
# stages 1-3 and window 7 in the last stage (a 7x7 map at 224 px, 13x13 bias
# tables). At 224 px stage 3 (14x14) is one unshifted window and stage 4 one
# window of 7, exactly as in pretraining, so no `pad_small_map` is needed.
_base_ = './greenmim_swin-base-w7_8xb256-amp-coslr-100e_in1k.py'

# what `mim train mmpretrain configs/greenmim_swin-base-w14_...in1k.py` writes
pretrained = ('work_dirs/greenmim_swin-base-w14_8xb256-amp-coslr-800e_in1k/'
              'epoch_800.pth')

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
        ],
        init_cfg=dict(checkpoint=pretrained)))
