"""Lightning systems: supervised teacher training, distillation, and pruning with distillation."""

from distill.modules.classifier import ClassifierSystem
from distill.modules.distill import DistillModule
from distill.modules.prune import PruneModule
from distill.modules.teacher import TeacherModule

__all__ = ["ClassifierSystem", "DistillModule", "PruneModule", "TeacherModule"]
