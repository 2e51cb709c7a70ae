"""Prefect flows: the order of the tasks, nothing else."""

from batch_classify.flows.classify import classify, classify_images

__all__ = ["classify", "classify_images"]
