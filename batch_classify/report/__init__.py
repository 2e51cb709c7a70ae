"""The run report: its numbers, the comparison with the previous run, and the files that show them.

Modules, each fact computed once (in ``build``) and passed as one report dict to the writers:

* ``metrics``: accuracy, top-5, restricted top-1, calibration (ECE), confusions, label-free statistics;
* ``compare``: this run against the previous committed run; ``policy``: the regression policy (when a
  run has regressed, and what that does to it: its state, tag, event and exit code);
* ``format``: how numbers print (the one percent formatter), for every writer;
* ``figures``: the pictures (matplotlib, no pyplot); ``gallery``: the thumbnails;
* ``markdown`` (``report.md``), ``html`` (``report.html``);
* ``build``: step 5 of a run and ``batch-classify report``: score once, write ``report.json``,
  ``report.md`` and ``report.html``.

Plain library code: no Prefect (it travels in Ray Jobs with :mod:`batch_classify.run.steps`).
"""
