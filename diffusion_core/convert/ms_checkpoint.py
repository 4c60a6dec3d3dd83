"""MindSpore .ckpt files read without MindSpore, and MindSpore's parameter spellings.

A .ckpt (mindspore.save_checkpoint, format "ckpt") is a run of serialised `Checkpoint` protobuf
messages (mindspore/train/checkpoint.proto):

    Checkpoint  { repeated Value value = 1; }
    Value       { required string tag = 1; oneof { TensorProto tensor = 2; MapTensorProto maptensor = 3; } }
    TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }

Large tensors are split into several Values with the same tag, in order; a file saved with
crc_check ends in b"crc_num" and 10 bytes. Protobuf's wire format is small enough to read here
(varints and length-delimited fields), which keeps MindSpore out of conversion. Encrypted files
cannot be read this way.
"""
from __future__ import annotations

import os

import numpy as np

# The one rule between MindSpore's parameter spellings and the canonical (PyTorch) ones; the
# MindSpore backend's names.py uses it too. Only the last part of a name differs:
SUFFIXES = {"gamma": "weight", "beta": "bias",                   # GroupNorm / LayerNorm / BatchNorm
            "embedding_table": "weight",                         # nn.Embedding
            "moving_mean": "running_mean", "moving_variance": "running_var"}
DTYPES = {"Float32": "<f4", "Float16": "<f2", "Float64": "<f8", "Int64": "<i8", "Int32": "<i4",
          "Int16": "<i2", "Int8": "i1", "UInt8": "u1", "Bool": "?"}


class CkptError(ValueError):
    """A .ckpt file that cannot be read; the message says why."""


def canonical_name(mindspore_name: str) -> str:
    module, _, suffix = mindspore_name.rpartition(".")
    return f"{module}.{SUFFIXES.get(suffix, suffix)}" if module else SUFFIXES.get(suffix, suffix)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CkptError("the file ends inside a number")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value) of one message: ints for varints, bytes otherwise."""
    pos, end = start, len(data) if end is None else end
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        else:
            raise CkptError(f"unexpected protobuf wire type {wire}")
        yield number, wire, value


def _tensor(message: bytes) -> tuple[tuple[int, ...], str, bytes]:
    dims, kind, content = [], "", b""
    for number, wire, value in _fields(message):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1:                      # packed dims
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos)
                dims.append(dim)
        elif number == 2:
            kind = value.decode()
        elif number == 3:
            content = value
    return tuple(dims), kind, content


def read_ckpt(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a .ckpt file by tag, as NumPy arrays (string entries are skipped)."""
    data = open(path, "rb").read()
    marker = data.rfind(b"crc_num")
    if marker >= 0 and len(data) - marker == len(b"crc_num") + 10:
        data = data[:marker]
    parts: dict[str, list] = {}
    try:
        for number, _, value in _fields(data):
            if number != 1:
                continue
            tag, tensor = "", None
            for field, _, item in _fields(value):
                if field == 1:
                    tag = item.decode()
                elif field == 2:
                    tensor = _tensor(item)
            if tensor is not None:
                parts.setdefault(tag, []).append(tensor)
    except (CkptError, UnicodeDecodeError, IndexError) as e:
        raise CkptError(f"{path} is not a readable MindSpore checkpoint ({e}); if it was saved with "
                        "enc_key, load and re-save it with MindSpore without encryption") from None
    out = {}
    for tag, pieces in parts.items():
        dims, kind = pieces[0][0], pieces[0][1]
        if kind not in DTYPES:
            continue   # "str" and exotic types: never model weights
        array = np.frombuffer(b"".join(p[2] for p in pieces), dtype=DTYPES[kind])
        out[tag] = array.reshape(dims) if dims else array.reshape(())
    if not out:
        raise CkptError(f"{path} holds no tensors; is it a MindSpore .ckpt file?")
    return out
