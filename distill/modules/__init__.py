"""Lightning systems: supervised teacher training and distillation."""

from distill.modules.classifier import ClassifierSystem
from distill.modules.distill import DistillModule
from distill.modules.teacher import TeacherModule

__all__ = ["ClassifierSystem", "DistillModule", "TeacherModule"]
