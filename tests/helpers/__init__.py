"""Test helpers, importable from any test (``pythonpath = ["tests"]`` in pyproject.toml): the shared
photos (:mod:`helpers.photos`), an S3 proxy that fails on purpose (:mod:`helpers.s3_proxy`), model
folders of each format built from real weights (:mod:`helpers.model_folders`), free ports and the
fake credentials of the loopback S3 endpoint (:mod:`helpers.net`). Fixtures live in ``tests/conftest.py``."""
