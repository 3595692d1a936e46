"""Trainable parts: backbone + multi-label head, label-specific alignment head, prompts,
context head (the context clustering itself is `vlml.contexts`)."""

from vlml.models.alignment import (
    LabelSpecificHead,
    TokenAdapter,
    alignment_logits,
    label_specific_features,
)
from vlml.models.backbone import (
    TRAINING_MODES,
    FrozenBackbone,
    LinearHead,
    MLPHead,
    MultiLabelNet,
    check_backbone_name,
    create_backbone,
    make_head,
)
from vlml.models.context import ContextHead
from vlml.models.prompts import FixedPrompts, PromptLearner

__all__ = [
    "MultiLabelNet", "FrozenBackbone", "LinearHead", "MLPHead", "make_head", "create_backbone",
    "check_backbone_name",
    "TRAINING_MODES", "LabelSpecificHead", "TokenAdapter", "alignment_logits",
    "label_specific_features", "ContextHead", "FixedPrompts", "PromptLearner",
]
