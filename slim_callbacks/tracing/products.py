"""Products between activations seen by a trace (attention's ``q @ k^T`` and
``attn @ v``), kept so that their multiply-adds after a plan can be counted without
pruning a copy of the network.

During the eval pass every ``matmul`` outside a known layer is recorded with the channel
labels of its two operands, laid out as ``[..., M, K]`` and ``[..., K, N]``. When the
graph is built each atom becomes a *source*: the producer parameter entry
``(layer, attr, axis, index)`` whose removal removes it (``0``: nothing removes it).
:func:`product_macs_after` then counts, for a set of kept sources, what the product
costs: ``sum over batch positions of M_kept * N_kept * K_kept``.

    >>> import numpy as np
    >>> p = Product(np.array([[0]]), np.array([[1, 2]]), (4, 3), (3, 2), (4, 2))
    >>> product_macs_after(p, np.array([True, True, False]))  # column 2 of y removed
    12
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from slim_callbacks.tracing.groups import OUT

Source = Tuple[str, str, int, int]  # (layer, attr, axis, index) of a producer entry


@dataclasses.dataclass(frozen=True)
class Product:
    """One product ``x @ y`` in canonical layout: ``x`` labels ``[..., M, K]``, ``y``
    labels ``[..., K, N]`` (broadcastable to the shapes, source ids, 0 = fixed)."""

    x: np.ndarray
    y: np.ndarray
    x_shape: Tuple[int, ...]
    y_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]


@dataclasses.dataclass
class ProductTable:
    """The products of a trace and the producer entry behind each source id.

    Attributes:
        products: every product outside known layers in the eval pass.
        sources: source id - 1 -> (layer, attr, axis, index).
        complete: False if some product could not be described (the counts then need
            the really pruned network).
        inputs: the example inputs traced with (counts hold for those only).
    """

    products: List[Product] = dataclasses.field(default_factory=list)
    sources: List[Source] = dataclasses.field(default_factory=list)
    complete: bool = True
    inputs: object = None


def canonical(labels: np.ndarray, ndim: int, out_ndim: int, transposed: bool) -> np.ndarray:
    """Labels of an operand of ``ndim`` axes as ``[..., rows, cols]`` of ``out_ndim``."""
    labels = labels.reshape((1,) * (ndim - labels.ndim) + labels.shape)
    labels = np.swapaxes(labels, -1, -2) if transposed else labels
    return labels.reshape((1,) * (out_ndim - labels.ndim) + labels.shape)


def canonical_shape(shape, out_ndim: int, transposed: bool) -> Tuple[int, ...]:
    shape = [int(d) for d in shape]
    if transposed:
        shape[-2], shape[-1] = shape[-1], shape[-2]
    return tuple([1] * (out_ndim - len(shape)) + shape)


def to_table(raw: List[tuple], atom_sources: Dict[int, Source], complete: bool,
             inputs) -> ProductTable:
    """Turns products labelled by atoms into a :class:`ProductTable` (an atom with no
    producer entry makes it incomplete)."""
    ids: Dict[Source, int] = {}
    table = ProductTable(complete=complete, inputs=inputs)

    def relabel(labels: np.ndarray) -> Optional[np.ndarray]:
        out = np.zeros_like(labels)
        for atom in np.unique(labels[labels > 0]):
            source = atom_sources.get(int(atom))
            if source is None:
                return None
            out[labels == atom] = ids.setdefault(source, len(ids) + 1)
        return out

    for x, y, x_shape, y_shape, out_shape in raw:
        x, y = relabel(x), relabel(y)
        if x is None or y is None:
            table.complete = False
            continue
        table.products.append(Product(x, y, x_shape, y_shape, out_shape))
    table.sources = list(ids)
    return table


def table_of(tracer) -> ProductTable:
    """The eval pass's products of ``tracer``, each atom as the producer weight entry
    behind it (its ``out`` record)."""
    sources: Dict[int, Source] = {}
    for rec in tracer.records:
        if rec.role == OUT and rec.attr == "weight" and not rec.blocks:
            for atom, index in zip(rec.atoms.tolist(), rec.indices.tolist()):
                sources.setdefault(atom, (rec.layer, rec.attr, rec.axis, index))
    return to_table(tracer.products, sources, tracer.products_complete, tracer.inputs)


def _count(kept_any: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Positions kept along ``axis`` (a compressed axis of length 1 stands for ``size``)."""
    return kept_any.sum(axis=axis) if kept_any.shape[axis] > 1 else kept_any.take(0, axis=axis) * size


def product_macs_after(product: Product, kept: np.ndarray) -> int:
    """Multiply-adds of ``product`` (whole batch) with ``kept[id]`` telling which
    sources stay (``kept[0]`` is True)."""
    kx, ky = kept[product.x], kept[product.y]
    m_size, k_size = product.x_shape[-2:]
    n_size = product.y_shape[-1]
    rows = _count(kx.any(axis=-1, keepdims=True), -2, m_size)      # [..., 1]
    cols = _count(ky.any(axis=-2, keepdims=True), -1, n_size)      # [..., 1]
    shared = kx.any(axis=-2, keepdims=True) & np.swapaxes(ky.any(axis=-1, keepdims=True), -1, -2)
    depth = _count(shared, -1, k_size)                              # [..., 1]
    per_position = np.broadcast_arrays(rows * cols * depth)[0]
    batch = math.prod(product.out_shape[:-2])
    return int(per_position.sum()) * batch // max(1, per_position.size)
