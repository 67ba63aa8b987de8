"""Rewrite an exported BERT-style encoder for what an int8 build's runs always are: one text.

``onnx-int8`` embeds documents one text per run (``OnnxEmbedder.run_size``) and
queries one at a time, so every run has batch 1 and no padding. The general
export pays for cases that never happen there. :func:`single_text_graph`
rewrites the fp32 graph, which queries then run as is and documents quantised:

1. **Batch 1**: a ``Squeeze`` after the embeddings and an ``Unsqueeze`` before the
   output, so the encoder works on ``[sequence, hidden]`` (a batch of 2 fails at the
   ``Squeeze`` instead of giving wrong vectors).
2. **No attention mask**: an unpadded text's mask is all ones, so the additive mask
   before each ``Softmax`` is zero; the mask path and the ``attention_mask`` input go.
3. **No token types**: a single sequence's token types are all 0, so the
   token-type embedding becomes a constant row and ``token_type_ids`` goes.
4. **Three of four attention transposes gone**: Q, K and V are reshaped to
   ``[sequence, heads, head_size]`` and both attention products become
   ``com.microsoft`` ``FusedMatMul`` nodes that read heads through strides
   (``transBatchA``/``transBatchB``), with the 1/sqrt(head_size) scale folded in.

In fp32 the rewritten graph matches the export within 3e-6. The embedder runs the
result without ORT's ``SkipLayerNormFusion``
(``retrieval.embedding.onnx_backend.INT8_DISABLED_OPTIMIZERS``): ONNX Runtime 1.31 would fuse Add +
LayerNormalization into its CPU ``SkipLayerNormalization``, a scalar loop slower
than the two nodes it replaces. Together: less time per text on one thread and
more texts per second on 2 cores, with the vectors as close to torch's as
before. Measured alternatives, all slower on one thread: ORT's transformer
optimizer (with or without its fused ``Attention``), ``MultiHeadAttention``,
``BiasGelu``, quantised attention products
(docs/benchmarks.md#recipes-v4-and-v5-graphs-rewritten-for-one-text-per-run).

The pattern matched is the TorchScript export of a BERT-style encoder with eager
attention (what :func:`retrieval.embedding.onnx_backend._export` writes); anything else raises
:class:`UnsupportedGraph`, and the build keeps the general graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import NodeProto, helper, numpy_helper

from core.errors import TroveError

MICROSOFT = "com.microsoft"
# The eager-attention export, node by node from the Softmax outwards (see _Attention).
_ATTENTION_KINDS = [
    "Add", "MatMul", "Transpose", "Transpose", "Reshape", "Reshape",
    "MatMul", "Transpose", "Reshape", "Transpose", "Reshape",
]  # fmt: skip


class UnsupportedGraph(TroveError, ValueError):
    """The graph is not the export :func:`single_text_graph` knows how to rewrite."""


@dataclass
class _Attention:
    """One layer's attention nodes around its Softmax, as the eager export lays them out."""

    softmax: NodeProto
    mask_add: NodeProto  # scores * scale + mask
    scale_mul: NodeProto  # (Q K^T) * scale
    qk: NodeProto
    q_transpose: NodeProto
    k_transpose: NodeProto
    q_reshape: NodeProto
    k_reshape: NodeProto
    pv: NodeProto
    v_transpose: NodeProto
    v_reshape: NodeProto
    out_transpose: NodeProto
    out_reshape: NodeProto


class _Graph:
    """Lookups over a graph's nodes: who produces and who consumes each value."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {init.name: init for init in graph.initializer}

    def constant(self, name: str) -> np.ndarray:
        """A value given as an initializer or a ``Constant`` node."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None or node.op_type != "Constant":
            raise UnsupportedGraph(f"{name!r} is not a constant")
        return numpy_helper.to_array(node.attribute[0].t)

    def add_constant(self, name: str, value: np.ndarray) -> str:
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def rewire(self, old: str, new: str) -> None:
        """Every consumer of ``old`` reads ``new`` instead."""
        for node in self.consumers.get(old, []):
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = new


def single_text_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``model`` (in place, and returned) for one unpadded text per run.

    :raises UnsupportedGraph: the graph is not a BERT-style eager-attention export.
    """
    graph = _Graph(model.graph)
    layers = [_attention(graph, node) for node in model.graph.node if node.op_type == "Softmax"]
    if not layers:
        raise UnsupportedGraph("no attention Softmax found")
    encoder_input = ""
    for layer in layers:
        encoder_input = _rewrite_attention(graph, layer)
    _single_batch(graph, encoder_input)
    _fold_token_types(graph)
    _prune(model)
    if not any(opset.domain == MICROSOFT for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
    return model


def _attention(graph: _Graph, softmax: NodeProto) -> _Attention:
    """The attention nodes around ``softmax``, checked against the eager export's layout."""
    try:
        mask_add = graph.producer[softmax.input[0]]
        scale_mul = next(
            graph.producer[name]
            for name in mask_add.input
            if name in graph.producer and graph.producer[name].op_type == "Mul"
        )
        qk = graph.producer[scale_mul.input[0]]
        q_transpose, k_transpose = graph.producer[qk.input[0]], graph.producer[qk.input[1]]
        pv = graph.consumers[softmax.output[0]][0]
        v_transpose = graph.producer[pv.input[1]]
        out_transpose = graph.consumers[pv.output[0]][0]
        layer = _Attention(
            softmax=softmax,
            mask_add=mask_add,
            scale_mul=scale_mul,
            qk=qk,
            q_transpose=q_transpose,
            k_transpose=k_transpose,
            q_reshape=graph.producer[q_transpose.input[0]],
            k_reshape=graph.producer[k_transpose.input[0]],
            pv=pv,
            v_transpose=v_transpose,
            v_reshape=graph.producer[v_transpose.input[0]],
            out_transpose=out_transpose,
            out_reshape=graph.consumers[out_transpose.output[0]][0],
        )
    except (KeyError, IndexError, StopIteration) as exc:
        raise UnsupportedGraph(f"unexpected attention layout near {softmax.name}") from exc
    kinds = [
        node.op_type
        for node in (
            layer.mask_add, layer.qk, layer.q_transpose, layer.k_transpose, layer.q_reshape,
            layer.k_reshape, layer.pv, layer.v_transpose, layer.v_reshape,
            layer.out_transpose, layer.out_reshape,
        )
    ]  # fmt: skip
    if kinds != _ATTENTION_KINDS:
        raise UnsupportedGraph(f"unexpected attention pattern near {softmax.name}: {kinds}")
    if _perm(layer.q_transpose) != [0, 2, 1, 3] or _perm(layer.k_transpose) != [0, 2, 3, 1]:
        raise UnsupportedGraph(f"unexpected head transposes near {softmax.name}")
    return layer


def _perm(transpose: NodeProto) -> list[int]:
    return next((list(a.ints) for a in transpose.attribute if a.name == "perm"), [])


def _rewrite_attention(graph: _Graph, layer: _Attention) -> str:
    """Replace one layer's mask, scale and head transposes by two ``FusedMatMul`` nodes;
    returns the value its Q projection reads (the encoder's input, in the first layer)."""
    scale = float(np.asarray(graph.constant(layer.scale_mul.input[1])).reshape(()))
    q_projection = next(
        graph.producer[name]
        for name in graph.producer[layer.q_reshape.input[0]].input
        if name in graph.producer
    )
    weight = graph.initializers.get(q_projection.input[1])
    if weight is None or scale <= 0:
        raise UnsupportedGraph(f"no Q weight or scale near {layer.softmax.name}")
    width = int(weight.dims[1])
    # The export bakes 1/sqrt(head_size) into the scale; heads follow from the width.
    head_size = round(1.0 / scale**2)
    heads = width // head_size
    if heads * head_size != width:
        raise UnsupportedGraph(f"width {width} is not heads x {head_size}")
    name = layer.softmax.name
    by_head = graph.add_constant(f"{name}/by_head", np.array([-1, heads, head_size], np.int64))
    flat = graph.add_constant(f"{name}/flat", np.array([-1, width], np.int64))
    for reshape in (layer.q_reshape, layer.k_reshape, layer.v_reshape):
        reshape.input[1] = by_head
    # [S, N, H] read as [N, S, H] through strides: scores = Q K^T * scale, per head.
    scores = _fused_matmul(
        [layer.q_reshape.output[0], layer.k_reshape.output[0]],
        layer.softmax.input[0],
        f"{layer.qk.name}/single_text",
        alpha=scale,
        trans_b=1,
        trans_batch_a=1,
    )
    context = _fused_matmul(
        [layer.softmax.output[0], layer.v_reshape.output[0]],
        layer.pv.output[0],
        f"{layer.pv.name}/single_text",
        alpha=1.0,
        trans_b=0,
        trans_batch_a=0,
    )
    graph.graph.node.extend([scores, context])
    for node in (
        layer.mask_add, layer.scale_mul, layer.qk, layer.q_transpose,
        layer.k_transpose, layer.v_transpose, layer.pv,
    ):  # fmt: skip
        graph.graph.node.remove(node)
    perm = next(a for a in layer.out_transpose.attribute if a.name == "perm")
    del perm.ints[:]
    perm.ints.extend([1, 0, 2])  # [N, S, H] -> [S, N, H], then flattened to [S, N*H]
    layer.out_reshape.input[1] = flat
    return q_projection.input[0]


def _fused_matmul(
    inputs: list[str], output: str, name: str, *, alpha: float, trans_b: int, trans_batch_a: int
) -> NodeProto:
    """``alpha * A @ B`` per head, B always read head-first (``transBatchB``)."""
    return helper.make_node(
        "FusedMatMul",
        inputs,
        [output],
        name=name,
        domain=MICROSOFT,
        alpha=alpha,
        transA=0,
        transB=trans_b,
        transBatchA=trans_batch_a,
        transBatchB=1,
    )


def _single_batch(graph: _Graph, encoder_input: str) -> None:
    """Squeeze the batch axis once after the embeddings; restore it on the output."""
    axis0 = graph.add_constant("single_text/axis0", np.array([0], np.int64))
    squeezed = f"{encoder_input}/single_text"
    graph.rewire(encoder_input, squeezed)
    output = graph.graph.output[0].name
    last = graph.producer[output]
    last.output[0] = f"{output}/single_text"
    graph.graph.node.extend(
        [
            helper.make_node(
                "Squeeze", [encoder_input, axis0], [squeezed], name="single_text/squeeze"
            ),
            helper.make_node(
                "Unsqueeze", [last.output[0], axis0], [output], name="single_text/unsqueeze"
            ),
        ]
    )


def _fold_token_types(graph: _Graph) -> None:
    """A single sequence's token types are all 0: the token-type lookup becomes row 0."""
    lookups = [n for n in graph.graph.node if n.op_type == "Gather" and "token_type_ids" in n.input]
    for lookup in lookups:
        table = graph.initializers.get(lookup.input[0])
        if table is None:
            raise UnsupportedGraph("the token-type embedding table is not an initializer")
        row = numpy_helper.to_array(table)[0].astype(np.float32)
        graph.rewire(lookup.output[0], graph.add_constant("single_text/token_type_0", row))
        graph.graph.node.remove(lookup)


def _prune(model: onnx.ModelProto) -> None:
    """Drop what no output depends on any more (the mask path, unused inputs), then
    put the nodes back in topological order, as ONNX requires."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(o in used for o in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | outputs
    for value in [i for i in graph.input if i.name not in used]:
        graph.input.remove(value)
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered: list[NodeProto] = []
    pending = list(graph.node)
    while pending:
        ready = [node for node in pending if all(name in known for name in node.input)]
        if not ready:
            raise UnsupportedGraph(f"a cycle or a missing input near {pending[0].name}")
        for node in ready:
            ordered.append(node)
            known.update(node.output)
        placed = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in placed]
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.value_info[:]  # the encoder is 2-D now: let the runtime infer shapes again


__all__ = ["UnsupportedGraph", "single_text_graph"]
