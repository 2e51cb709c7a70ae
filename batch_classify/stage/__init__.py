"""The inference stage: reading with deadlines (``reading``), decoding on the CPU or a GPU
(``device_decode``), the engines (``engines``: ONNX Runtime, PyTorch; ``quantize``: int8), the scores
from the logits (``scores``), the plan from the resources (``plan``), the stage on Ray Data
(``inference``) or in this process (``local``), what both do with their output (``output``), and Ray's
runtime (``ray_start``, ``ray_logs``, ``core_notes``, ``reach``, ``capacity``). Imports ``models`` and
the leaves; never ``run``, ``report`` or ``cli``: it travels in a Ray Job.
"""
