# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained ConvNeXt-V2-T, 1x
# schedule (12 epochs), 8 GPUs x 2 images. Usage:
#   mim train mmdet configs/mmdet/mask-rcnn_greenmim-convnext-v2-tiny_fpn_1x_coco.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=<pretrain .pth>
# Inherits the Swin-B sibling (data, schedule) and swaps the backbone for
# plain mmpretrain ConvNeXt: GreenConvNeXt keeps its state-dict keys, so the
# GreenMIM checkpoint loads with prefix='backbone.' (norm0..norm2, which
# out_indices (0, 1, 2, 3) adds, keep their init with a warning).
_base_ = './mask-rcnn_greenmim-swin-base-w7_fpn_1x_coco.py'

# what the pretraining config writes last
pretrained = ('work_dirs/greenmim_convnext-v2-tiny_8xb256-amp-coslr-800e_'
              'in1k/epoch_800.pth')

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ConvNeXt',
        arch='tiny',
        use_grn=True,
        layer_scale_init_value=0.,
        drop_path_rate=0.4,  # mmdet's ConvNeXt-T Mask R-CNN
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

# mmdet's ConvNeXt recipe: AdamW lr 1e-4, layer-wise lr decay 0.95 over 6
# ConvNeXt layer groups
optim_wrapper = dict(
    constructor='LearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(
        _delete_=True, decay_rate=0.95, decay_type='layer_wise',
        num_layers=6))
