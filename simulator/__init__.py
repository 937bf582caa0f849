"""quadrant-sim: four-quadrant (prefill/decode x attention/FFN) performance, capacity and cost
simulation of LLM inference fleets.

Public API (everything else is internal and may change):

* specs: ``load_hardware``, ``load_model``, ``read_deployment``, ``read_traffic``, ``model_from_hf_config``;
  built in code: ``simple_traffic`` (a Poisson or closed-loop ``Traffic`` of fixed lengths), ``quick_deployment``
  (one colocated pool from ``PlanOptions``)
* planning: ``PlanOptions``, ``plan_from_options``, ``simple_phase``, ``ServingPlan``
* analytic core: ``whatif`` (-> ``WhatIfResult``), ``build_ops``, ``StepShape``, ``RooflineModel``,
  ``TimingModel``, ``memory_fit``
* serving simulation: ``simulate`` (-> ``SimulationResult`` with DataFrames)
* search: ``sweep``, ``pareto_front``; capacity planning: ``PlanRequest``, ``plan_capacity_for``,
  ``compare_deployments`` (-> ``PlanOutcome``)
* validation: ``read_measurements``, ``predict``, ``score``, ``calibrate``, ``apply_calibration``
"""

import importlib

__version__ = "0.1.0"

# name -> module; imported on first use so `quadrant --help` and the CLI start fast
_EXPORTS = {
    "WhatIfResult": "analysis.whatif", "whatif": "analysis.whatif",
    "PlanOptions": "build", "plan_from_options": "build", "quick_deployment": "build",
    "calibrate": "validation.calibrate",
    "CalibrationError": "errors", "InfeasibleError": "errors", "MeasurementError": "errors",
    "SimulatorError": "errors", "SpecError": "errors",
    "read_measurements": "validation.measurements",
    "StepShape": "ops.build", "build_ops": "ops.build",
    "apply_calibration": "timing.calibrated", "memory_fit": "timing.memory", "RooflineModel": "timing.roofline",
    "TimingModel": "timing.base",
    "ServingPlan": "plan", "simple_phase": "plan",
    "pareto_front": "planning.sweep", "sweep": "planning.sweep",
    "PlanRequest": "planning.plan", "plan_capacity_for": "planning.plan", "compare_deployments": "planning.plan",
    "PlanOutcome": "planning.plan",
    "SimulationResult": "serving.runner", "simulate": "serving.runner",
    "load_hardware": "specs.catalog", "load_model": "specs.catalog",
    "read_deployment": "specs.deployment", "model_from_hf_config": "specs.model", "read_traffic": "specs.traffic",
    "simple_traffic": "specs.traffic",
    "predict": "validation.validate", "score": "validation.validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
