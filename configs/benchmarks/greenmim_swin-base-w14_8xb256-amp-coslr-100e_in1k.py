# Fine-tuning of a GreenMIM Swin-B window-14 model: ours
# (configs/greenmim_swin-base-w14_...in1k.py) or the paper's released one
# (tools/convert_official.py ... --prefix backbone.). Both use window 14 in
# stages 1-3 and window 7 in the last stage (a 7x7 map at 224 px, 13x13 bias
# tables; configs/_base_/models/swin_paper-layout.py), exactly as in
# pretraining, so no `pad_small_map` is needed.
_base_ = './greenmim_swin-base-w7_8xb256-amp-coslr-100e_in1k.py'

# what `mim train mmpretrain configs/greenmim_swin-base-w14_...in1k.py` writes
pretrained = ('work_dirs/greenmim_swin-base-w14_8xb256-amp-coslr-800e_in1k/'
              'epoch_800.pth')

model = dict(
    backbone=dict(_base_.paper_swin_w14, init_cfg=dict(checkpoint=pretrained)))
