"""The command line: the console script's first moments (``launch``), the Typer app (``main``), its options
generated from the settings (``options``), the run's start-up side by side (``startup``: the temporary
Prefect API, the model's load, a Ray started ahead) and its watchdog, Ctrl-C and SIGTERM
(``interrupts``), Prefect's defaults for a run from the terminal (``prefect_setup``), what the terminal
shows (``summary``, ``logs``), and the offline ``demo``. The top of the package: nothing imports it but
the console script, the ``deployments`` layer and tests.
"""
