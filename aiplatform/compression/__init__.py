"""Model compression: int8, pruning and fp16 versions of a registered model, with a report."""

from aiplatform.compression.codec import decode_model, encode_weights
from aiplatform.compression.methods import CompressionMethod, compression_of, parse_method

__all__ = ["CompressionMethod", "compression_of", "decode_model", "encode_weights", "parse_method"]
