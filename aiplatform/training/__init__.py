"""Training on Ray Train: what a template is (``template``), the installed ones (``catalog``), the
built-in ones (``cnn``, ``text``, ``minilm``), the shared loop (``loop``), the engine that runs a
template as a TorchTrainer (``engine``) and publishing its outcome (``publish``).

Nothing is imported here: the task manager reads the template catalogue without loading Ray Train.
"""
