# Mask R-CNN + FPN on COCO, 1x, with a GreenMIM Swin-L window-14 model (ours
# or the paper's released one, converted with tools/convert_official.py
# --prefix backbone.). Same windows as the Swin-B sibling (14; 7 in the last
# stage); only the arch, the FPN inputs and the checkpoint change.
_base_ = './mask-rcnn_greenmim-swin-base-w14_fpn_1x_coco.py'

# what `mim train mmpretrain configs/greenmim_swin-large-w14_...in1k.py` writes
pretrained = ('work_dirs/greenmim_swin-large-w14_8xb256-amp-coslr-800e_in1k/'
              'epoch_800.pth')

model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768, 1536]))
