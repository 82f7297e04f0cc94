"""Lightning systems: supervised teacher training, distillation, pruning and quantization-aware training with distillation."""

from distill.modules.classifier import ClassifierSystem
from distill.modules.distill import DistillModule
from distill.modules.prune import PruneModule
from distill.modules.qat import QATModule
from distill.modules.teacher import TeacherModule

__all__ = ["ClassifierSystem", "DistillModule", "PruneModule", "QATModule", "TeacherModule"]
