"""One attention layer at L=2048 (8 heads x 64, the small shape) on one CPU thread: ONNX Runtime's
MultiHeadAttention with the ALiBi bias, whole and in query blocks, and the standard ONNX Attention
(opset 23) with and without it, against PyTorch's SDPA with the same bias materialised and as the
reversed-key view. Why ORT trails torch at 2048 (benchmarks/RESULTS.md).

    OMP_NUM_THREADS=1 python benchmarks/experiments/ort_attention_2048.py
"""
import time, numpy as np, onnx, onnxruntime as ort, torch
from onnx import helper, TensorProto
L, H, heads = 2048, 512, 8
def build(blocks):
    nodes, outs = [], []
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, L, H])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, L, H])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, L, H])
    b = helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, heads, L, L])
    size = L // blocks
    split = helper.make_tensor("split", TensorProto.INT64, [blocks], [size] * blocks)
    if blocks > 1:
        nodes.append(helper.make_node("Split", ["q", "split"], [f"q{i}" for i in range(blocks)], axis=1))
        nodes.append(helper.make_node("Split", ["bias", "split"], [f"b{i}" for i in range(blocks)], axis=2))
    for i in range(blocks):
        qi, bi = (f"q{i}", f"b{i}") if blocks > 1 else ("q", "bias")
        nodes.append(helper.make_node("MultiHeadAttention", [qi, "k", "v", "", "", bi], [f"o{i}"], domain="com.microsoft", num_heads=heads))
        outs.append(f"o{i}")
    if blocks > 1:
        nodes.append(helper.make_node("Concat", outs, ["out"], axis=1))
    else:
        nodes[-1].output[0] = "out"
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, L, H])
    g = helper.make_graph(nodes, "g", [q, k, v, b], [out], initializer=[split])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)])
    return m.SerializeToString()
rng = np.random.default_rng(0)
feeds = {n: rng.standard_normal((1, L, H), dtype=np.float32) for n in "qkv"}
slopes = 2.0 ** (-8 * np.arange(1, heads + 1) / heads)
dist = np.abs(np.arange(L)[:, None] - np.arange(L)[None, :])
feeds["bias"] = (-slopes[:, None, None] * dist[None]).astype(np.float32)[None]
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
ref = None
for blocks in (1, 4, 16, 64):
    s = ort.InferenceSession(build(blocks), so, providers=["CPUExecutionProvider"])
    out = s.run(None, feeds)[0]
    ref = out if ref is None else ref
    t = time.process_time(); n = 3
    for _ in range(n): s.run(None, feeds)
    print(f"ORT MHA, {blocks} query blocks: {(time.process_time() - t) / n * 1000:.0f} ms, max diff {np.abs(out - ref).max():.1e}")


def standard_attention(with_bias: bool, causal: bool = False) -> bytes:
    """ONNX Attention-23 on [1, heads, L, d] inputs, with the additive bias or without (then ORT may take its flash kernel)."""
    names = ["q", "k", "v"] + (["bias"] if with_bias else [])
    shapes = {"bias": [1, heads, L, L]}
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes.get(n, [1, heads, L, H // heads])) for n in names]
    node = helper.make_node("Attention", names, ["out"], is_causal=int(causal))
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, heads, L, H // heads])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)]).SerializeToString()


heads_feeds = {n: feeds[n].reshape(1, L, heads, H // heads).transpose(0, 2, 1, 3).copy() for n in "qkv"}
for with_bias, causal in ((True, False), (False, False), (False, True)):
    s = ort.InferenceSession(standard_attention(with_bias, causal), so, providers=["CPUExecutionProvider"])
    f = {**heads_feeds, **({"bias": feeds["bias"]} if with_bias else {})}
    s.run(None, f)
    t = time.process_time()
    for _ in range(3): s.run(None, f)
    label = "with the bias" if with_bias else ("causal, no bias" if causal else "no bias")
    print(f"ORT Attention-23, {label}: {(time.process_time() - t) / 3 * 1000:.0f} ms")
torch.set_num_threads(1)
q, k, v = (torch.from_numpy(feeds[n]).view(1, L, heads, H // heads).transpose(1, 2) for n in "qkv")
bias = torch.from_numpy(feeds["bias"])
for name, mask in (("materialised bias", bias),):
    with torch.no_grad():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        t = time.process_time()
        for _ in range(3): torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    print(f"torch SDPA, {name}: {(time.process_time() - t) / 3 * 1000:.0f} ms")
line = torch.from_numpy((-slopes[:, None] * np.abs(np.arange(2 * L - 1) - (L - 1))[None]).astype(np.float32))
view = line.as_strided((1, heads, L, L), (0, line.stride(0), 1, 1))
with torch.no_grad():
    kf, vf = k.flip(2), v.flip(2)
    torch.nn.functional.scaled_dot_product_attention(q, kf, vf, attn_mask=view)
    t = time.process_time()
    for _ in range(3): torch.nn.functional.scaled_dot_product_attention(q, kf, vf, attn_mask=view)
print(f"torch SDPA, reversed-key view: {(time.process_time() - t) / 3 * 1000:.0f} ms")
