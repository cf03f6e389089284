"""Hyperparameter sweeps: a task whose trials train another template on Ray Tune.

``params`` (what a sweep is) and ``template`` (the ``sweep`` template, its checks) are light;
``tuning`` (the job's side, on Ray Tune) is imported by the sweep's job only.
"""
