"""The training engine on Ray Train: templates with typed parameters and their loops."""

from aiplatform.evaluation import evaluate
from aiplatform.training.engine import TrainingOutcome, run_training
from aiplatform.training.templates import TrainingTemplate, get_template, list_templates

__all__ = ["TrainingOutcome", "TrainingTemplate", "evaluate", "get_template", "list_templates", "run_training"]
