"""The experiment layer: what turns the loop into recorded, resumable experiments.

The core (``harness.loop`` and the modules it uses) runs one iteration after
another and knows nothing of files or databases. This package does the rest:

* :mod:`~harness.experiments.runner`: one run end to end, as a leaderboard row
  (start, iterations, finish/failure), and ``--resume``;
* :mod:`~harness.experiments.journal`: every leaderboard write of a run, kept
  in its directory while the database cannot take it;
* :mod:`~harness.experiments.checkpoints`: the state after each iteration;
* :mod:`~harness.experiments.labels` and :mod:`~harness.experiments.label_files`:
  every label a run bought, and the round trip to people;
* :mod:`~harness.experiments.sweep`, :mod:`~harness.experiments.grid_run` and
  :mod:`~harness.experiments.executors`: grids of runs, running them with
  progress callbacks, and where they execute;
* :mod:`~harness.experiments.study_plan`, :mod:`~harness.experiments.study`,
  :mod:`~harness.experiments.verdicts` and :mod:`~harness.experiments.study_report`:
  plan files of claims, their runs, their verdicts and the published report;
  :mod:`~harness.experiments.matched` reads a claim's arms at their common KL.

It may import the core and the store (``leaderboard``); the core and the store
never import it (``tests/test_architecture.py``).
"""
