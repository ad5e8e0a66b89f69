"""The course: what a student runs, built on the method in :mod:`h2arn` (never the other way round).

* :mod:`h2arn.course.runner`: executes the chapters with papermill (``./course run``, ``python -m h2arn.course``);
* :mod:`h2arn.course.experiments`: cached training runs per chapter profile, the ablation table;
* :mod:`h2arn.course.widgets`: chapter 08's interactive UI over :mod:`h2arn.search`;
* :mod:`h2arn.course.plots`: drawing helpers for the Poincaré disk and entailment cones;
* :mod:`h2arn.course.assignments`: the exercise checks, student copies and the grader.

Add a chapter: ``notebooks/NN_name.ipynb`` (the runner finds it by its number prefix).
"""
