"""Datasets: generators (``nbody``, ``xtb``), readers (``md17``), task graphs
(``tasks``), dataset files (``store``) and the ``hegnn data`` commands (``cli``)."""
