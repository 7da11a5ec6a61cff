"""Symmetric ALiBi attention through cuDNN's fused SDPA kernel, for long padded batches at inference.

cuDNN's own ALiBi mask is causal-only, so the symmetric penalty ``slope_h * |i - j|`` (and the
key padding mask) is written as a cuDNN score modifier: a few pointwise operations on the score
tile inside the kernel, as FlexAttention's ``score_mod`` does. On an H200 this ran the attention of
8 x 8192 tokens in 4.26 ms against FlexAttention's 5.53 ms, at the same accuracy
(``benchmarks/cudnn_alibi.py``). It needs the ``nvidia-cudnn-frontend`` package (``pip install
jina-rag[cudnn]``) over the cuDNN library that PyTorch ships; without it the model keeps
FlexAttention.

The attention is a ``torch.library`` custom op, so a compiled forward keeps it as one opaque call.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

import torch

# Below this many tokens per sequence the packed FlexAttention path wins: no padding, and the
# kernels are short enough that cuDNN's gain does not pay for a padded batch.
CUDNN_MIN_LENGTH = 2048
# Padded widths are rounded up to this many tokens (the kernels' tile), keeping shapes few.
CUDNN_WIDTH_MULTIPLE = 128
# Subtracted from the score of every padding key: e^-1e6 is 0 in fp32.
PADDING_PENALTY = 1.0e6


@functools.cache
def _cudnn() -> Any | None:
    try:
        import cudnn
    except ImportError:
        return None
    return cudnn


def cudnn_attention_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the cuDNN ALiBi kernel can run here: the frontend installed, a Hopper-or-newer GPU, 16-bit inputs."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16) or _cudnn() is None:
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9 and _cudnn().backend_version() >= 91000


@functools.cache
def _handle(device: torch.device) -> Any:
    with torch.cuda.device(device):
        return _cudnn().create_handle()


class _AlibiGraph:
    """One built cuDNN graph: ALiBi + key padding as score modifier, for one batch shape and dtype."""

    def __init__(self, batch: int, length: int, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> None:
        cudnn = _cudnn()
        fp32 = cudnn.data_type.FLOAT
        io = cudnn.data_type.BFLOAT16 if dtype == torch.bfloat16 else cudnn.data_type.HALF
        self.handle = _handle(device)
        graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=fp32, compute_data_type=fp32)
        # Logical [B, H, L, D] over [B, L, H, D] storage: what the linear layers write.
        dims, strides = (batch, heads, length, head_dim), (length * heads * head_dim, head_dim, heads * head_dim, 1)
        self.q, self.k, self.v = (graph.tensor(dim=dims, stride=strides, data_type=io) for _ in range(3))
        self.slopes = graph.tensor(dim=(1, heads, 1, 1), stride=(heads, 1, 1, 1), data_type=fp32)
        self.last_key = graph.tensor(dim=(batch, 1, 1, 1), stride=(1, 1, 1, 1), data_type=fp32)
        self.penalty = graph.tensor(dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=fp32)

        def alibi_and_padding(g, score):
            row = g.gen_index(score, 2, compute_data_type=fp32)
            row.set_data_type(fp32)
            col = g.gen_index(score, 3, compute_data_type=fp32)
            col.set_data_type(fp32)
            alibi = g.mul(g.abs(g.sub(col, row, compute_data_type=fp32), compute_data_type=fp32), self.slopes,
                          compute_data_type=fp32)
            # (col - last_key) is >= 1 exactly on the padding keys of each row's sequence.
            beyond = g.relu(g.sub(col, self.last_key, compute_data_type=fp32), compute_data_type=fp32)
            padding = g.mul(beyond, self.penalty, compute_data_type=fp32)
            return g.sub(score, g.add(alibi, padding, compute_data_type=fp32), compute_data_type=fp32)

        self.o, _ = graph.sdpa(name="alibi_sdpa", q=self.q, k=self.k, v=self.v, generate_stats=False,
                               attn_scale=1.0 / math.sqrt(head_dim), score_mod=alibi_and_padding)
        self.o.set_output(True).set_dim(dims).set_stride(strides)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        self.graph = graph
        self.workspace = torch.empty(graph.get_workspace_size(), device=device, dtype=torch.uint8)
        self.penalty_value = torch.full((1, 1, 1, 1), PADDING_PENALTY, device=device, dtype=torch.float32)

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(q)
        last_key = (lengths.to(torch.float32) - 1).view(-1, 1, 1, 1)
        pack = {self.q: q, self.k: k, self.v: v, self.o: out, self.slopes: slopes.to(torch.float32).view(1, -1, 1, 1),
                self.last_key: last_key, self.penalty: self.penalty_value}
        _cudnn().set_stream(self.handle, torch.cuda.current_stream(q.device).cuda_stream)
        self.graph.execute(pack, self.workspace, handle=self.handle)
        return out


_graphs: dict[tuple, _AlibiGraph] = {}
_graphs_lock = threading.Lock()


def _graph_for(q: torch.Tensor) -> _AlibiGraph:
    batch, length, heads, head_dim = q.shape
    key = (batch, length, heads, head_dim, q.dtype, q.device)
    with _graphs_lock:
        if key not in _graphs:
            _graphs[key] = _AlibiGraph(batch, length, heads, head_dim, q.dtype, q.device)
        return _graphs[key]


@torch.library.custom_op("jina_rag::alibi_attention_cudnn", mutates_args=())
def alibi_attention_cudnn(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Symmetric-ALiBi attention of a right-padded batch: ``q, k, v`` and the result ``[B, L, heads, head_dim]``.

    Each row attends to its first ``lengths[b]`` keys; rows past a sequence's length hold values
    the caller ignores.
    """
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return _graph_for(q).run(q, k, v, slopes, lengths)


@alibi_attention_cudnn.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)
