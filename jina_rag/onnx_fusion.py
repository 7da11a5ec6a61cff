"""An ONNX Runtime graph fusion for JinaBERT's attention: ALiBi-biased softmax attention → MultiHeadAttention.

ONNX Runtime's BERT attention fusion only recognises BERT's padding-mask patterns, so it leaves
JinaBERT's attention (an additive ALiBi bias that also carries the padding) as a dozen separate
operators. This fusion matches that subgraph, as ``torch.onnx`` exports the model's eager attention::

    q, k, v = Reshape → Transpose of the three projections
    Softmax(MatMul(q, k) / sqrt(head_dim) + bias) → MatMul(·, v) → Transpose → Reshape

and replaces it with ``com.microsoft.MultiHeadAttention(q, k, v, attention_bias=bias)``, which
takes the projections ``[batch, L, hidden]`` as they are. The bias stays the one tensor computed
once per forward and shared by all layers.

Imported only when optimising: it builds on ``onnxruntime.transformers``.
"""

from __future__ import annotations

import logging

import numpy as np
from onnx import NodeProto, helper
from onnxruntime.transformers.fusion_base import Fusion
from onnxruntime.transformers.onnx_model import OnnxModel

logger = logging.getLogger(__name__)

_HEADS_PERM = [0, 2, 1, 3]  # [B, L, N, D] <-> [B, N, L, D]
_KEYS_PERM = [0, 2, 3, 1]  # [B, L, N, D] -> [B, N, D, L]
_SIZE_OPS = ("Shape", "Gather", "Unsqueeze", "Concat", "Squeeze", "Cast")


class FusionAlibiAttention(Fusion):
    """Fuse each ALiBi attention block into one ``MultiHeadAttention`` node."""

    def __init__(self, model: OnnxModel, num_heads: int) -> None:
        super().__init__(model, "MultiHeadAttention", "Softmax", "ALiBi")
        self.num_heads = num_heads

    def _perm(self, node: NodeProto) -> list[int] | None:
        perm = OnnxModel.get_node_attribute(node, "perm")
        return list(perm) if perm is not None else None

    def _scale(self, scale_node: NodeProto) -> float | None:
        """The softmax scale from ``/ c`` or ``* c`` on the scores, if c is a constant."""
        _, value = self.model.get_constant_input(scale_node)
        if value is None or np.asarray(value).size != 1:
            return None
        value = float(np.asarray(value).item())
        return 1.0 / value if scale_node.op_type == "Div" else value

    def _only_sizes_for(self, node: NodeProto, reshape: NodeProto, input_name_to_nodes) -> bool:
        """Whether ``node`` is a Shape whose result only feeds ``reshape``'s target shape (pruned with it)."""
        if node.op_type != "Shape":
            return False
        pending, seen = [node], []
        while pending:
            current = pending.pop()
            seen.append(current)
            for output in current.output:
                for consumer in input_name_to_nodes.get(output, []):
                    if consumer is reshape and consumer.input[1] == output:
                        continue
                    if consumer.op_type not in _SIZE_OPS or consumer in seen:
                        return False
                    pending.append(consumer)
        return True

    def fuse(self, softmax: NodeProto, input_name_to_nodes, output_name_to_node) -> None:
        scores = None
        for scale_op in ("Div", "Mul"):
            scores = self.model.match_parent_path(softmax, ["Add", scale_op, "MatMul"], [None, None, 0], output_name_to_node)
            if scores is not None:
                break
        if scores is None:
            return
        add_bias, scale_node, matmul_qk = scores
        bias = next(name for name in add_bias.input if name != scale_node.output[0])
        children = input_name_to_nodes.get(softmax.output[0], [])
        if len(children) != 1 or children[0].op_type != "MatMul" or children[0].input[0] != softmax.output[0]:
            return
        matmul_pv = children[0]
        output_path = self.model.match_child_path(matmul_pv, ["Transpose", "Reshape"], input_name_to_nodes=input_name_to_nodes)
        q_path = self.model.match_parent_path(matmul_qk, ["Transpose", "Reshape"], [0, 0], output_name_to_node)
        k_path = self.model.match_parent_path(matmul_qk, ["Transpose", "Reshape"], [1, 0], output_name_to_node)
        v_path = self.model.match_parent_path(matmul_pv, ["Transpose", "Reshape"], [1, 0], output_name_to_node)
        if None in (output_path, q_path, k_path, v_path):
            logger.debug("ALiBi attention fusion: %s does not have the expected q/k/v layout", softmax.name)
            return
        perms = [self._perm(q_path[0]), self._perm(k_path[0]), self._perm(v_path[0]), self._perm(output_path[0])]
        scale = self._scale(scale_node)
        if perms != [_HEADS_PERM, _KEYS_PERM, _HEADS_PERM, _HEADS_PERM] or scale is None:
            logger.debug("ALiBi attention fusion: %s has other transposes or a non-constant scale", softmax.name)
            return
        inner = [matmul_qk, scale_node, add_bias, softmax, matmul_pv, output_path[0], *q_path, *k_path, *v_path]
        # Only the projections, the bias and the block's output may be used outside the block,
        # apart from the size arithmetic of the final Reshape (the TorchScript exporter's form).
        if any(
            consumer not in inner
            and consumer is not output_path[1]
            and not self._only_sizes_for(consumer, output_path[1], input_name_to_nodes)
            for node in inner
            for output in node.output
            for consumer in input_name_to_nodes.get(output, [])
        ):
            logger.debug("ALiBi attention fusion: an intermediate of %s is used elsewhere", softmax.name)
            return
        attention = helper.make_node(
            "MultiHeadAttention",
            inputs=[q_path[1].input[0], k_path[1].input[0], v_path[1].input[0], "", "", bias],
            outputs=[output_path[-1].output[0]],
            name=self.model.create_node_name("MultiHeadAttention", "Attention_ALiBi"),
            domain="com.microsoft",
            num_heads=self.num_heads,
            scale=scale,
        )
        self.nodes_to_add.append(attention)
        self.node_name_to_graph_name[attention.name] = self.this_graph_name
        self.nodes_to_remove.extend([*inner, output_path[1]])
        self.increase_counter("MultiHeadAttention (ALiBi)")
        self.prune_graph = True
