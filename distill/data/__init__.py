"""Data: dataset sources behind one registry, and the DataModule that serves them."""

from distill.data.datamodule import ImageDataModule
from distill.data.sources import SOURCES, DatasetInfo

__all__ = ["ImageDataModule", "DatasetInfo", "SOURCES", "list_datasets"]


def list_datasets() -> list[str]:
    """Names accepted by ``--data.dataset``."""
    return SOURCES.names()
