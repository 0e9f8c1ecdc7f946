# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Twins-SVT-L, 1x
# schedule (12 epochs), 8 GPUs x 2 images. Usage:
#   mim train mmdet configs/mmdet/mask-rcnn_greenmim-twins-svt-large_fpn_1x_coco.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=<pretrain .pth>
# Inherits the Swin-B sibling (data, schedule, optimizer) and swaps the
# backbone. `GreenSVT` without a mask is mmpretrain's SVT with the same keys;
# its init_weights rejects a checkpoint of another architecture.
_base_ = './mask-rcnn_greenmim-swin-base-w7_fpn_1x_coco.py'

# what `mim train mmpretrain configs/greenmim_twins.py` writes last
pretrained = 'work_dirs/greenmim_twins/epoch_800.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.GreenSVT',
        arch='large',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        # a norm after every output stage; pretraining has only the last,
        # the other three keep their init (with a warning)
        norm_after_stage=[True, True, True, True],
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))

# AdamW as the sibling: no weight decay on norms (Twins has no relative
# position tables; its position encoding is the PEG conv)
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True, custom_keys={'norm': dict(decay_mult=0.)}))
