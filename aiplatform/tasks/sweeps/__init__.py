"""Hyperparameter sweeps: a task whose trials train another template on Ray Tune.

``params`` (what a sweep is) and ``template`` (the ``sweep`` template, its checks) are light; the
job's side, on Ray Tune, is imported by the sweep's job only: ``driver`` (segments run, stopped,
resumed; the best trial registered), ``trial`` (one trial), ``search`` (space, searcher, ASHA),
``recording`` (trials into the task queue), ``segments`` (durable segments), ``stopping``.
"""
