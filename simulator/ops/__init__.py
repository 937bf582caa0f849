"""Ops: what one step of a model does on one device, as shapes with FLOP and bytes derived in one
place. ``build`` turns a step shape and a phase plan into the op table of each quadrant."""

from .build import (
                    ALL_GATHER,
                    ALL_REDUCE,
                    ALL_TO_ALL,
                    COMPUTE,
                    P2P,
                    FrozenOpTable,
                    StepShape,
                    build_ops,
                    random_routing_imbalance,
)

__all__ = ["ALL_GATHER", "ALL_REDUCE", "ALL_TO_ALL", "COMPUTE", "P2P", "FrozenOpTable", "StepShape", "build_ops",
           "random_routing_imbalance"]
