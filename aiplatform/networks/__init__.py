"""The networks the platform builds from a ``model.json``: the architectures (``architectures``) and
the shipped MiniLM sentence encoder they can start from (``sentence_encoder``)."""
