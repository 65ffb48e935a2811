"""`archspec train`: a compiled network, a data set and a recipe, trained on CUDA or the CPU, one
process or several (torchrun). Every epoch ends in an atomic checkpoint and a metrics line, so a run
killed at any moment resumes where it stopped; on the CPU a resumed run is bit-identical to one that
never stopped."""

from .config import TrainConfig
from .devices import Dist, pick_device
from .evaluation import evaluate_checkpoint, load_trained, model_from_source, network_of
from .loop import Trainer, train
from .specfiles import fit_network, spec_files, spec_from_files
from .step import Step, StepConfig, assemble

__all__ = ["TrainConfig", "Dist", "pick_device", "Trainer", "train", "evaluate_checkpoint", "load_trained",
           "model_from_source", "network_of", "spec_files", "spec_from_files", "fit_network", "Step", "StepConfig",
           "assemble"]
