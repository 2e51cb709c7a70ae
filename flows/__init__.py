"""Prefect flows: the order of the tasks, nothing else."""

from flows.classify import classify_images

__all__ = ["classify_images"]
