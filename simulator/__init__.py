"""quadrant-sim: four-quadrant (prefill/decode x attention/FFN) performance, capacity and cost
simulation of LLM inference fleets.

Public API (everything else is internal and may change):

* specs: ``load_hardware``, ``load_model``, ``read_deployment``, ``read_traffic``, ``model_from_hf_config``
* planning: ``PlanOptions``, ``plan_from_options``, ``simple_phase``, ``ServingPlan``
* analytic core: ``whatif`` (-> ``WhatIfResult``), ``build_ops``, ``StepShape``, ``RooflineModel``,
  ``TimingModel``, ``memory_fit``
* serving simulation: ``simulate`` (-> ``SimulationResult`` with DataFrames)
* search: ``sweep``, ``pareto_front``
* validation: ``read_measurements``, ``predict``, ``score``, ``calibrate``, ``apply_calibration``
"""

from .analysis import WhatIfResult, whatif
from .build import PlanOptions, plan_from_options
from .calibrate import calibrate
from .errors import CalibrationError, InfeasibleError, MeasurementError, SimulatorError, SpecError
from .measurements import read_measurements
from .ops import StepShape, build_ops
from .perf.calibrated import apply_calibration
from .perf.memory import memory_fit
from .perf.roofline import RooflineModel
from .perf.timing import TimingModel
from .plan import ServingPlan, simple_phase
from .search import pareto_front, sweep
from .serving.runner import SimulationResult, simulate
from .specs.catalog import load_hardware, load_model
from .specs.deployment import read_deployment
from .specs.model import model_from_hf_config
from .specs.traffic import read_traffic
from .validate import predict, score

__version__ = "0.1.0"

__all__ = [
    "CalibrationError", "InfeasibleError", "MeasurementError", "PlanOptions", "RooflineModel", "ServingPlan",
    "SimulationResult", "SimulatorError", "SpecError", "StepShape", "TimingModel", "WhatIfResult",
    "apply_calibration", "build_ops", "calibrate", "load_hardware", "load_model", "memory_fit",
    "model_from_hf_config", "pareto_front", "plan_from_options", "predict", "read_deployment",
    "read_measurements", "read_traffic", "score", "simple_phase", "simulate", "sweep", "whatif",
]
