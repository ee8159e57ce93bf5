"""An exported inference model's files, checked before Paddle reads them.

Paddle Inference reads ``PREFIX.json`` (the program) and ``PREFIX.pdiparams`` (the
weights) without comparing them: a truncated weights file or the weights of another
model may load and run on garbage, or end in a C++ traceback. :func:`check_model_files`
parses the program's parameter declarations (``"p"`` ops: name and shape) and the
weights file's tensor headers, and raises one SlimError line when they disagree.

Examples:
    >>> import paddle, tempfile, os
    >>> from slim_callbacks.deploy.runtime import save_inference_model
    >>> prefix = os.path.join(tempfile.mkdtemp(), "model")
    >>> save_inference_model(paddle.nn.Linear(4, 2), prefix, [1, 4])
    >>> sorted(check_model_files(prefix))
    [(2,), (4, 2)]
"""
from __future__ import annotations

import json
import os
import struct
from typing import List, Optional, Tuple

import numpy as np

from slim_callbacks.core.errors import SlimError

PROGRAM_SUFFIX = ".json"
PARAMS_SUFFIX = ".pdiparams"
LEGACY_SUFFIX = ".pdmodel"  # the program before PIR
# VarType codes of Paddle's framework.proto -> bytes per element
_ELEMENT_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2}

Shape = Tuple[int, ...]


def model_files(prefix: str) -> tuple:
    """The program and weight files of the inference model saved at ``prefix``."""
    return prefix + PROGRAM_SUFFIX, prefix + PARAMS_SUFFIX


def check_model_files(prefix: str) -> List[Shape]:
    """The parameter shapes of the model at ``prefix``; SlimError if a file is missing,
    the program is not readable, or the weights file does not hold exactly the
    parameters the program declares."""
    program, params = model_files(prefix)
    missing = [f for f in (program, params) if not os.path.isfile(f)]
    if program in missing and os.path.isfile(prefix + LEGACY_SUFFIX):
        raise SlimError(f"{prefix + LEGACY_SUFFIX} is an inference program in the old format "
                        f"(Paddle 2, or Paddle 3 with FLAGS_enable_pir_api=0), which is not "
                        f"read here: export the model again with Paddle 3 and the PIR API on "
                        f"(the default), which writes {os.path.basename(program)}")
    if missing:
        raise SlimError(f"no inference model at {prefix!r}: missing {', '.join(missing)}; "
                        "export one with `slim-callbacks export` or slim_callbacks.export()")
    declared = _program_shapes(program)
    stored = _weight_shapes(params)
    if declared is not None and sorted(declared) != sorted(stored):
        raise SlimError(f"{params} does not hold the weights {program} declares ({len(stored)} "
                        f"tensors {_few(stored)}, the program {len(declared)} {_few(declared)}): "
                        f"the weights of another model? Export the model again")
    return stored


def onednn_crash(prefix: str) -> Optional[str]:
    """What in the model at ``prefix`` crashes Paddle Inference's oneDNN passes (the
    process dies, nothing to catch), or None: a conv followed by ``leaky_relu``, whose
    fusion segfaults in Paddle 3.3.1 (CSPDarkNet, DarkNet heads).

    >>> import paddle, tempfile, os
    >>> from slim_callbacks.deploy.runtime import save_inference_model
    >>> prefix = os.path.join(tempfile.mkdtemp(), "model")
    >>> save_inference_model(paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3),
    ...                      paddle.nn.LeakyReLU()), prefix, [1, 3, 8, 8])
    >>> onednn_crash(prefix)
    'a conv followed by leaky_relu'
    """
    ops = set(_program_ops(model_files(prefix)[0]))
    if "leaky_relu" in ops and ops & {"conv2d", "depthwise_conv2d", "conv3d"}:
        return "a conv followed by leaky_relu"
    return None


def _program_ops(program: str) -> List[str]:
    """The names of the program's ``pd_op`` ops (``conv2d``), [] if unreadable."""
    try:
        with open(program, encoding="utf-8") as stream:
            data = json.load(stream)
        return [op["#"].split(".", 1)[1] for region in data["program"]["regions"]
                for block in region["blocks"] for op in block["ops"] if op["#"].startswith("1.")]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError):
        return []


def _few(shapes: List[Shape]) -> str:
    listed = ", ".join(str(list(s)) for s in sorted(shapes)[:3])
    return f"[{listed}{', ...' if len(shapes) > 3 else ''}]"


def _program_shapes(program: str) -> Optional[List[Shape]]:
    """The shapes of the parameters the program declares; None for a program format this
    check does not know (Paddle then reads it alone)."""
    try:
        with open(program, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SlimError(f"{program} is not a readable inference program ({err}); export the "
                        f"model again") from None
    try:
        ops = [op for region in data["program"]["regions"] for block in region["blocks"]
               for op in block["ops"]]
        return [tuple(int(d) for d in op["O"]["TT"]["D"][1]) for op in ops if op["#"] == "p"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _weight_shapes(params: str) -> List[Shape]:
    """The shapes of the tensors stored one after another in a ``.pdiparams`` file (only
    their headers are read; the data is skipped)."""
    size = os.path.getsize(params)
    shapes = []
    with open(params, "rb") as stream:
        try:
            while stream.tell() < size:
                shapes.append(_read_tensor(stream, size))
        except (struct.error, ValueError) as err:
            raise SlimError(f"{params} is truncated or not a weights file (tensor "
                            f"{len(shapes) + 1} at byte {stream.tell()}: {err}; a full "
                            f"disk?); export the model again") from None
    return shapes


def _read_tensor(stream, size: int) -> Shape:
    """One tensor's shape, leaving ``stream`` after it: version, LoD, version, desc, data."""
    _, lod_levels = struct.unpack("<IQ", _read(stream, 12))
    for _ in range(lod_levels):
        (length,) = struct.unpack("<Q", _read(stream, 8))
        stream.seek(length, os.SEEK_CUR)
    _, desc_size = struct.unpack("<Ii", _read(stream, 8))
    if not 0 < desc_size <= size - stream.tell():
        raise ValueError(f"bad tensor header size {desc_size}")
    dtype, shape = _read_desc(_read(stream, desc_size))
    data = int(np.prod(shape, dtype=np.int64)) * _ELEMENT_BYTES[dtype]
    if data > size - stream.tell():
        raise ValueError(f"{size - stream.tell()} bytes left for a tensor of shape {list(shape)}")
    stream.seek(data, os.SEEK_CUR)
    return shape


def _read(stream, count: int) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise ValueError("the file ends inside a tensor header")
    return data


def _read_desc(desc: bytes) -> Tuple[int, Shape]:
    """``TensorDesc`` protobuf: field 1 the data type, field 2 the dims."""
    dtype, dims, at = None, [], 0
    while at < len(desc):
        tag, at = _varint(desc, at)
        if tag == 0x08:
            dtype, at = _varint(desc, at)
        elif tag == 0x10:
            dim, at = _varint(desc, at)
            dims.append(dim)
        elif tag == 0x12:  # packed dims
            size, at = _varint(desc, at)
            end = at + size
            while at < end:
                dim, at = _varint(desc, at)
                dims.append(dim)
        else:
            raise ValueError(f"unknown tensor header field {tag}")
    if dtype not in _ELEMENT_BYTES:
        raise ValueError(f"unknown data type {dtype}")
    return dtype, tuple(dims)


def _varint(data: bytes, at: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("bad tensor header")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at
