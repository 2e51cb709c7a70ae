"""batch-classify: nightly batch image classification with Ray Data, orchestrated by Prefect.

This package is the plain library layer: it has no Prefect in it. The Prefect
tasks live in the top-level ``tasks`` package and the flows in ``flows``.
"""

__version__ = "0.1.0"
