"""A run: its five steps as plain functions (``steps``, called by the Prefect tasks), its folder and the
names of its files (``layout``), staging and the commit (``results``), the run id's lease (``lease``),
predictions reused from earlier runs (``reuse``), the Delta table (``table``), its events (``events``),
and its stage submitted to a Ray cluster as a Ray Job (``cluster``, ``stage_job``, ``job_log``). Imports
``stage``, ``models``, ``report`` and the leaves; never ``cli``.
"""
