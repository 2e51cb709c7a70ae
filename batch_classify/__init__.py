"""batch-classify: nightly batch image classification with Ray Data, orchestrated by Prefect.

The modules of this package are the plain library layer: no Prefect in them. The Prefect layers
are its subpackages ``batch_classify.tasks``, ``batch_classify.flows`` and
``batch_classify.deployments``, whose sources stay in the repository's top-level ``tasks/``,
``flows/`` and ``deployments/`` folders (mapped by ``package-dir`` in ``pyproject.toml``).
"""

__version__ = "0.1.0"

#: The subpackages on Prefect's side (their folders at the repository root, see above). Installed
#: inside this package, they are left out of the copy of it that travels in a Ray Job
#: (``cluster._package_copy``).
PREFECT_LAYERS = ("flows", "tasks", "deployments")
