"""Training tasks: their durable queue (``queue``: records, states, the head-node actor), the task
manager (``manager``: templates -> tasks -> Ray jobs), the scheduler that starts queued tasks
(``scheduler``) and what a running job reports back (``reporting``).

Nothing is imported here, so the queue's actor loads without the manager's Ray job client.
"""
