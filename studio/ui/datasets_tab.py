"""The Datasets tab lives in the package studio.ui.datasets (one module per panel); this
name stays for the callers that import it."""

from studio.ui.datasets import DatasetsTab, build, dataset_choices, follow_training

__all__ = ["DatasetsTab", "build", "dataset_choices", "follow_training"]
