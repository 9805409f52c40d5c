"""mamlcourse: a small functional MAML library for the course's lessons.

    import mamlcourse as mc
    cfg = mc.config.sine_preset("quick")
    model = mc.models.build_model(cfg)
    history = mc.train.meta_train(model, mc.data.sine.SineTasks.from_config(cfg), cfg)

Importing it has no side effects: nothing is seeded, downloaded or styled. The widgets
(``mamlcourse.widgets``) and Omniglot data (``mamlcourse.data.omniglot``) are imported on
first use.
"""

from . import algorithms, baseline, checkpoint, config, data, evaluate, maml, models, tasks, train
from .config import OmniglotConfig, SineConfig, omniglot_preset, resolve_device, resolve_mode, sine_preset
from .evaluate import EvalResult, confidence_interval
from .maml import Params, adaptation_trajectory, get_params, inner_loop, meta_loss
from .models import ConvNet4, SineMLP, build_model
from .tasks import Task, TaskBatch, fixed_tasks, seeded_generator
from .train import History, meta_train

__version__ = "0.1.0"

__all__ = [
    "algorithms", "baseline", "checkpoint", "config", "data", "evaluate", "maml", "models", "tasks", "train",
    "OmniglotConfig", "SineConfig", "omniglot_preset", "sine_preset", "resolve_device",
    "resolve_mode", "EvalResult", "confidence_interval", "Params", "adaptation_trajectory",
    "get_params", "inner_loop", "meta_loss", "ConvNet4", "SineMLP", "build_model", "Task",
    "TaskBatch", "fixed_tasks", "seeded_generator", "History", "meta_train",
]
