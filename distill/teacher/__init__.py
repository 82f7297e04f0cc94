"""The teacher: described by ``TeacherSettings``, made by ``build_teacher``, run as a frozen ``Teacher``."""

from distill.teacher.build import build_teacher
from distill.teacher.settings import TeacherSettings
from distill.teacher.teacher import Origin, Teacher

__all__ = ["Origin", "Teacher", "TeacherSettings", "build_teacher"]
