# Mask R-CNN + FPN on COCO, 1x, with a GreenMIM Swin-B window-14 model: ours
# (configs/greenmim_swin-base-w14_...in1k.py) or the paper's released one
# (tools/convert_official.py ... --prefix backbone.). As in pretraining, the
# last stage uses window 7 (13x13 bias tables) and stages 1-3 window 14
# (configs/_base_/models/swin_paper-layout.py).
# Usage as in the window-7 sibling:
#   mim train mmdet configs/mmdet/mask-rcnn_greenmim-swin-base-w14_fpn_1x_coco.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=<pretrain .pth>
_base_ = './mask-rcnn_greenmim-swin-base-w7_fpn_1x_coco.py'

# what `mim train mmpretrain configs/greenmim_swin-base-w14_...in1k.py` writes
pretrained = ('work_dirs/greenmim_swin-base-w14_8xb256-amp-coslr-800e_in1k/'
              'epoch_800.pth')

model = dict(
    backbone=dict(_base_.paper_swin_w14, init_cfg=dict(checkpoint=pretrained)))
