"""The Triton kernels behind :mod:`jina_rag.fused_geglu` (imported only where Triton is installed)."""

import triton
import triton.language as tl


@triton.jit
def tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP: tl.constexpr):
    """This program's output tile, in grouped order: GROUP row blocks share each column block of the
    weight while it is in L2."""
    pid = tl.program_id(0)
    blocks_m, blocks_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    first_m = pid // (GROUP * blocks_n) * GROUP
    group_rows = min(blocks_m - first_m, GROUP)
    return first_m + (pid % (GROUP * blocks_n)) % group_rows, (pid % (GROUP * blocks_n)) // group_rows


@triton.jit
def gelu_times(gate, up):
    return 0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476)) * up


@triton.jit
def geglu_kernel(
    x_ptr, w_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr, EVEN_K: tl.constexpr,
):
    block_m, block_n = tile(M, N, BLOCK_M, BLOCK_N, GROUP)
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # Rows and columns past the edge wrap around (their results are never stored), so the loads need no mask.
    x_ptrs = x_ptr + (rows % M)[:, None] * stride_xm + ks[None, :]
    gate_ptrs = w_ptr + (cols % N)[None, :] * stride_wn + ks[:, None]  # [BLOCK_K, BLOCK_N] of weight[:N].T
    up_ptrs = gate_ptrs + N * stride_wn  # the up half starts N rows further
    gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        if EVEN_K:
            x, w_gate, w_up = tl.load(x_ptrs), tl.load(gate_ptrs), tl.load(up_ptrs)
        else:
            k_ok = ks < K - k
            x = tl.load(x_ptrs, mask=k_ok[None, :], other=0.0)
            w_gate = tl.load(gate_ptrs, mask=k_ok[:, None], other=0.0)
            w_up = tl.load(up_ptrs, mask=k_ok[:, None], other=0.0)
        gate = tl.dot(x, w_gate, gate)
        up = tl.dot(x, w_up, up)
        x_ptrs += BLOCK_K
        gate_ptrs += BLOCK_K
        up_ptrs += BLOCK_K
    out = gelu_times(gate, up)
    y_ptrs = y_ptr + rows[:, None] * stride_ym + cols[None, :]
    tl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def geglu_tma_kernel(
    x_desc, gate_desc, up_desc, y_desc, M, N, K,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr, STAGES: tl.constexpr,
):
    block_m, block_n = tile(M, N, BLOCK_M, BLOCK_N, GROUP)
    off_m, off_n = block_m * BLOCK_M, block_n * BLOCK_N
    gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # The tensor-memory engine zero-fills reads past the edges and clips the store.
    for k in tl.range(0, K, BLOCK_K, num_stages=STAGES):
        x = x_desc.load([off_m, k])
        gate = tl.dot(x, gate_desc.load([off_n, k]).T, gate)
        up = tl.dot(x, up_desc.load([off_n, k]).T, up)
    out = gelu_times(gate, up)
    y_desc.store([off_m, off_n], out.to(y_desc.dtype))
