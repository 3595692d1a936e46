"""Trainable parts: backbone + multi-label head, label-specific alignment head, prompts,
context identification."""

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
from vlml.models.context import (
    ContextClustering,
    ContextHead,
    context_priors,
    context_targets,
    identify_contexts,
    load_contexts,
    plot_contexts,
    pseudo_context_targets,
    save_contexts,
)
from vlml.models.prompts import FixedPrompts, PromptLearner

__all__ = [
    "MultiLabelNet", "FrozenBackbone", "LinearHead", "MLPHead", "make_head", "create_backbone",
    "check_backbone_name",
    "TRAINING_MODES", "LabelSpecificHead", "TokenAdapter", "alignment_logits",
    "label_specific_features", "ContextClustering", "ContextHead", "context_priors",
    "context_targets", "identify_contexts", "load_contexts", "plot_contexts",
    "pseudo_context_targets", "save_contexts", "FixedPrompts", "PromptLearner",
]
