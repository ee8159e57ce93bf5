"""Exported inference programs back as dygraph networks: read the program
(:mod:`~.reader`), convert each op (:mod:`~.converters`, :mod:`~.layer_converters`),
build the network (:mod:`~.build`, :mod:`~.network`), check it (:mod:`~.load`)."""
from slim_callbacks.program.converters import register_converter
from slim_callbacks.program.load import load_inference_model

__all__ = ["load_inference_model", "register_converter"]
