"""Models: the registry of packaged models and ``get_spec`` (``registry``), model folders and their
formats (``folder``), classes (``vocabulary``: id2label, wnids) and preprocessing presets
(``preprocess``), which travel with the weights. Imports only the leaves.
"""
