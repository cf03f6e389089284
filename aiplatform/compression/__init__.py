"""Model compression: int8, pruning and fp16 versions of a registered model, with a report.

The methods are in ``methods``, the job in ``compressor``, the Ray entry in ``remote``; the weight
forms they write are part of the package format (``aiplatform.packaging.weights``).
"""
