"""Batch inference: a registered model over a dataset split, an uploaded file or a URI, as a
queued task run on Ray Data (``params``, ``template``, ``inputs``, ``outputs``, ``checks``, ``job``)."""
