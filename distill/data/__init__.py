"""Data: dataset sources behind one registry, the DataModules that serve them, and their interface.

A DataModule is registered in ``DATA_MODULES`` under a short name; checkpoints record that name and
``distill.evaluate`` rebuilds the data from it, so a new kind of data is one file and one line here.
"""

from lightning.pytorch import LightningDataModule

from distill.data.datamodule import ImageDataModule
from distill.data.interface import DistillData
from distill.data.sources import SOURCES, DatasetInfo
from distill.data.tabular import TabularDataModule
from distill.registry import Registry

DATA_MODULES: Registry[type[LightningDataModule]] = Registry("data module")
DATA_MODULES.register(ImageDataModule, name="images")
DATA_MODULES.register(TabularDataModule, name="tabular")

__all__ = ["DATA_MODULES", "DatasetInfo", "DistillData", "ImageDataModule", "SOURCES", "TabularDataModule",
           "list_datasets"]


def list_datasets() -> list[str]:
    """Names accepted by ``--data.dataset``."""
    return SOURCES.names()
