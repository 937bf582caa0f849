"""Ops: what one step of a model does on one device, as records that carry shapes (``kinds``), with
FLOP and bytes derived in one place; ``build`` turns a step shape and a phase plan into the op
records of each quadrant."""

from .build import StepShape, build_ops, expected_experts_hit, random_routing_imbalance
from .kinds import KINDS, OpTable, OpTableBuilder, derive_flop_bytes

__all__ = ["KINDS", "OpTable", "OpTableBuilder", "StepShape", "build_ops", "derive_flop_bytes",
           "expected_experts_hit", "random_routing_imbalance"]
