"""ONNX export and the ONNX Runtime backend, on real ONNX Runtime and a small checkpoint built here."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")  # the onnx extra: skipped, not broken, where it is missing
if getattr(onnx, "__file__", None) is None:  # only the checkout's onnx/ tooling folder, as a namespace package
    pytest.skip("the onnx package is not installed: pip install 'jina-rag[onnx]'", allow_module_level=True)
onnxruntime = pytest.importorskip("onnxruntime")

from jina_rag import CheckpointError, JinaEncoder, load_model  # noqa: E402
from jina_rag.cli import main as cli_main  # noqa: E402
from jina_rag.batching import pad_batch  # noqa: E402
from jina_rag.onnx_backend import CPU, CUDA, OnnxBackend, providers_for_device, resolve_providers  # noqa: E402
from jina_rag.onnx_export import export_onnx  # noqa: E402

from conftest import VOCAB_DIR, bert_tokenizer, write_published_checkpoint  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
CUDA_AVAILABLE = CUDA in onnxruntime.get_available_providers()


def real_paragraphs() -> list[str]:
    """English prose: the README's paragraphs and those of a few standard-library module docstrings."""
    docs = [inspect.getdoc(importlib.import_module(name)) or "" for name in ("argparse", "unittest", "csv", "heapq", "subprocess", "doctest")]
    paragraphs = [p for text in [README.read_text(encoding="utf-8"), *docs] for p in text.split("\n\n")]
    return [p.strip() for p in paragraphs if len(p.strip()) > 200 and not p.lstrip().startswith(">>>")]


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (len(lengths), max(lengths)), generator=generator)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return ids * mask, mask


def session(folder: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=[CPU])


@pytest.fixture(scope="module")
def torch_model(checkpoint):
    return load_model(checkpoint)


@pytest.fixture(scope="module")
def fp32_export(checkpoint, tmp_path_factory):
    """A plain fp32 export traced with a 16-token example (dynamo exporter)."""
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "fp32", example_length=16, show_progress=False)


@pytest.fixture(scope="module")
def int8_export(checkpoint, tmp_path_factory):
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "int8", optimize=True, quantize="int8", show_progress=False)


@pytest.mark.parametrize("lengths", [[8, 5, 3], [512, 257, 3], [2048, 5], [2500]], ids=["8", "512", "2048", "2500"])
def test_fp32_export_equals_torch_with_padding_beyond_the_example_length(fp32_export, torch_model, lengths):
    # Exported with 16 tokens: 2048 and 2500 only match if ALiBi is built from the actual length.
    assert fp32_export.exporter == ("dynamo" if importlib.util.find_spec("onnxscript") else "torchscript")
    ids, mask = padded_batch(lengths)
    hidden, pooled = session(fp32_export.folder).run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.inference_mode():
        expected_hidden = torch_model(ids, mask).numpy()
        expected_pooled = torch_model.pool(ids, mask).numpy()
    real = mask.bool().numpy()
    np.testing.assert_allclose(hidden[real], expected_hidden[real], atol=1e-4)
    np.testing.assert_allclose(pooled, expected_pooled, atol=1e-4)


def test_export_holds_the_weights_and_nothing_else(fp32_export, checkpoint):
    model = onnx.load(str(fp32_export.model_file))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["last_hidden_state", "sentence_embedding"]
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        assert all(d.dim_param and not d.dim_value for d in dims), "batch and sequence axes must be dynamic"
    largest = max(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert largest == 30528 * 64  # the word embeddings; no [heads, L, L] ALiBi table
    assert abs(fp32_export.file_bytes - fp32_export.weight_bytes) < 2 * 2**20
    files = {p.name for p in fp32_export.folder.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json"} <= files
    from jina_rag import load_tokenizer

    text = "Exported tokenizers read text as the model's own does."
    assert load_tokenizer(fp32_export.folder)(text)["input_ids"] == load_tokenizer(checkpoint)(text)["input_ids"]
    assert json.loads((fp32_export.folder / "config.json").read_text())["position_embedding_type"] == "alibi"


def test_torchscript_exporter_with_fused_attention_equals_torch(checkpoint, torch_model, tmp_path):
    # The fallback exporter (used where the dynamo exporter fails), optimised for ONNX Runtime.
    result = export_onnx(checkpoint, tmp_path / "ts", exporter="torchscript", optimize=True, show_progress=False)
    assert result.exporter == "torchscript"
    layers = torch_model.config.num_hidden_layers
    assert result.operators.get("MultiHeadAttention") == layers and "Softmax" not in result.operators
    assert result.operators.get("SkipLayerNormalization") == 2 * layers + 1
    ids, mask = padded_batch([2048, 700])
    (pooled,) = session(result.folder).run(["sentence_embedding"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(pooled, torch_model.pool(ids, mask).numpy(), atol=1e-4)


def test_int8_keeps_cosine_on_real_text_and_shrinks_the_file(int8_export, fp32_export):
    texts = real_paragraphs()
    assert len(texts) >= 20
    fp32 = JinaEncoder.from_pretrained(fp32_export.folder, backend="onnx").encode(texts)
    int8 = JinaEncoder.from_pretrained(int8_export.folder, backend="onnx").encode(texts)
    cosine = (fp32 * int8).sum(axis=1)  # both are L2-normalised
    assert cosine.min() >= 0.99, cosine
    assert not np.allclose(fp32, int8, atol=1e-6)  # it really is another model file
    assert "MatMulInteger" in int8_export.operators and "MultiHeadAttention" in int8_export.operators
    assert int8_export.file_bytes < 0.35 * fp32_export.file_bytes


def test_encoder_on_onnx_equals_torch_encoder(fp32_export, encoder):
    onnx_encoder = JinaEncoder.from_pretrained(fp32_export.folder, backend="onnx", max_length=128)
    texts = ["a short query", "retrieval " * 300, "long context encoders read whole documents"]  # one text needs windows
    np.testing.assert_allclose(onnx_encoder.encode(texts, batch_tokens=256), encoder.encode(texts, batch_tokens=256), atol=1e-5)
    info = onnx_encoder.info()
    assert info["backend"] == "onnx" and info["providers"].startswith(CPU) and info["dim"] == 64


def test_adapters_run_on_the_onnx_backend(fp32_export, encoder):
    from jina_rag.chroma_embedding import JinaEmbeddingFunction
    from jina_rag.langchain import JinaEmbeddings
    from jina_rag.llama_index import JinaEmbedding

    options = {"model_name": str(fp32_export.folder), "backend": "onnx", "max_length": 128}
    texts = ["whole documents in one vector", "a query about long context retrieval"]
    expected = encoder.encode(texts)
    langchain = JinaEmbeddings(**options)
    assert langchain.encoder.info()["backend"] == "onnx"
    np.testing.assert_allclose(langchain.embed_documents(texts), expected, atol=1e-5)
    np.testing.assert_allclose(JinaEmbedding(**options).get_text_embedding_batch(texts), expected, atol=1e-5)
    chroma = JinaEmbeddingFunction(**options)
    rebuilt = JinaEmbeddingFunction.build_from_config(chroma.get_config())
    assert rebuilt.encoder.info()["backend"] == "onnx"
    np.testing.assert_allclose(np.array(rebuilt(texts)), expected, atol=1e-5)


def test_optimum_loads_the_exported_folder(fp32_export, torch_model):
    # optimum-onnx pins transformers < 4.58; where transformers 5 is installed it is absent.
    ORTModelForFeatureExtraction = pytest.importorskip("optimum.onnxruntime").ORTModelForFeatureExtraction

    model = ORTModelForFeatureExtraction.from_pretrained(fp32_export.folder)
    tokens = bert_tokenizer()(["ONNX Runtime runs the exported encoder", "a second, longer sentence about ALiBi"], padding=True, return_tensors="pt")
    output = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    with torch.inference_mode():
        expected = torch_model(tokens["input_ids"], tokens["attention_mask"]).numpy()
    real = tokens["attention_mask"].bool().numpy()
    np.testing.assert_allclose(np.asarray(output.last_hidden_state)[real], expected[real], atol=1e-4)


def test_provider_selection():
    assert resolve_providers(None) == (CPU,)
    both = [CUDA, CPU]
    assert resolve_providers([CUDA], available=both) == (CUDA, CPU)
    with_options = resolve_providers([(CUDA, {"device_id": 1})], available=both)
    assert with_options == ((CUDA, (("device_id", 1),)), CPU) and hash(with_options)
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        resolve_providers([CUDA], available=[CPU])
    with pytest.raises(ValueError, match="not available"):
        resolve_providers(["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="empty"):
        resolve_providers([])


@pytest.mark.skipif(CUDA_AVAILABLE, reason="this onnxruntime build has CUDA")
def test_cuda_requested_without_cuda_build_is_a_clear_error(fp32_export):
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        JinaEncoder(fp32_export.folder, backend="onnx", providers=[CUDA])
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        JinaEncoder(fp32_export.folder, backend="onnx", device="cuda")


def test_backend_arguments_are_checked(fp32_export, checkpoint):
    with pytest.raises(ValueError, match="backend must be"):
        JinaEncoder(checkpoint, backend="tensorrt")
    with pytest.raises(ValueError, match="backend='onnx'"):
        JinaEncoder(checkpoint, providers=[CPU])
    with pytest.raises(ValueError, match="precision of the export"):
        JinaEncoder(fp32_export.folder, backend="onnx", dtype="float16")
    with pytest.raises(FileNotFoundError, match="export-onnx"):
        JinaEncoder.from_pretrained(checkpoint, backend="onnx")


def test_exporting_a_model_that_is_not_jinabert_is_a_clear_error(tmp_path):
    # all-MiniLM-L6-v2: a real BERT folder with absolute position embeddings.
    with pytest.raises(CheckpointError, match="not a JinaBERT config.*published"):
        export_onnx(VOCAB_DIR, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_exports_fp16_and_embeds_on_onnx(checkpoint, tmp_path, capsys, encoder):
    out = tmp_path / "fp16"
    assert cli_main(["export-onnx", str(checkpoint), str(out), "--dtype", "fp16", "--optimize", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "dtype float16" in printed and "min cosine" in printed
    model = onnx.load(str(out / "model.onnx"))
    assert model.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # pooled in fp32
    assert OnnxBackend(out).export_info["dtype"] == "float16"
    text = "half precision is for the CUDA execution provider"
    assert cli_main(["embed", text, "--model", str(out), "--backend", "onnx", "--max-length", "128"]) == 0
    vector = np.array(json.loads(capsys.readouterr().out)["embedding"])
    assert float(vector @ encoder.encode(text)) >= 0.99
    assert cli_main(["info", "--model", str(out), "--backend", "onnx"]) == 0
    assert "float16" in capsys.readouterr().out
    assert cli_main(["export-onnx", str(VOCAB_DIR), str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "not a JinaBERT" in capsys.readouterr().err


def test_cuda_device_names_the_provider_and_its_gpu():
    assert providers_for_device(None, "cuda") == [CUDA]
    assert providers_for_device(None, "cuda:1") == [(CUDA, {"device_id": 1})]
    assert providers_for_device(None, "cpu") is None
    assert providers_for_device([CPU], "cuda") == [CPU]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs onnxruntime-gpu with the CUDA provider")
def test_cuda_provider_binds_inputs_and_outputs_on_the_gpu(fp32_export, torch_model):
    backend = OnnxBackend(fp32_export.folder, providers=providers_for_device(None, "cuda:0"))
    assert backend.session.get_providers()[0] == CUDA and backend.describe()["providers"].startswith(CUDA)
    sequences = [list(range(1000, 1000 + n)) for n in (300, 40, 7)]
    bound = backend.embed(sequences)  # IO binding
    ids, mask = pad_batch(sequences, 0)
    plain = backend.session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(bound, plain, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        expected = torch_model.pool(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(bound, expected, atol=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs onnxruntime-gpu with the CUDA provider")
def test_fp16_export_on_cuda_provider(checkpoint, tmp_path, encoder):
    result = export_onnx(checkpoint, tmp_path / "fp16", dtype="fp16", optimize=True, show_progress=False)
    onnx_encoder = JinaEncoder.from_pretrained(result.folder, backend="onnx", providers=[CUDA], max_length=128)
    assert onnx_encoder.info()["providers"].startswith(CUDA)
    texts = real_paragraphs()
    cosine = (onnx_encoder.encode(texts) * encoder.encode(texts)).sum(axis=1)
    assert cosine.min() >= 0.99


def test_int8_rewrites_the_geglu_that_plain_int8_breaks(checkpoint, int8_export, tmp_path):
    """A GEGLU whose ``up`` half sums large terms to ~1 (teacher_init's exact GELU copy) breaks in plain int8.

    The export rewrites it first (the ones-vector component of each column becomes a bias,
    SmoothQuant scales): the same fp32 function, and every MatMul then quantises.
    """
    from jina_rag import save_pretrained
    from jina_rag.onnx_export import _calibration_batches, _dynamic_int8, _int8_friendly_geglu
    from training.teacher_init import ones_vector

    model = load_model(checkpoint)
    with torch.no_grad():
        for layer in model.encoder.layer:
            layernorm = layer.attention.output.LayerNorm
            # Biases that nearly cancel: the vector w with LayerNorm(h) . w == 1 is large.
            layernorm.bias.copy_(torch.linspace(-0.05, 0.0505, layernorm.bias.numel()))
            up = layer.mlp.gated_layers.weight[model.config.intermediate_size :]
            up.copy_(ones_vector(layernorm).expand_as(up))
            layer.mlp.wo.weight.mul_(10)  # the feed-forward weighs against the residual
    folder = save_pretrained(model, tmp_path / "ill-conditioned", bert_tokenizer())
    fp32 = export_onnx(folder, tmp_path / "fp32", show_progress=False)
    # The check can fail: int8 of every MatMul really does drift on this model.
    _dynamic_int8(fp32.model_file, tmp_path / "all-int8.onnx")
    ids, mask = padded_batch([300, 40])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    reference = session(fp32.folder).run(["sentence_embedding"], feeds)[0]

    def run(path):
        return onnxruntime.InferenceSession(str(path), providers=[CPU]).run(["sentence_embedding"], feeds)[0]

    def cosines(a, b):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    assert cosines(reference, run(tmp_path / "all-int8.onnx")).min() < 0.99
    batches = _calibration_batches(bert_tokenizer(), model.config.vocab_size)
    assert batches and _int8_friendly_geglu(fp32.model_file, tmp_path / "rewritten.onnx", batches) == model.config.num_hidden_layers
    np.testing.assert_allclose(run(tmp_path / "rewritten.onnx"), reference, rtol=1e-4, atol=1e-4)  # the fp32 function kept
    result = export_onnx(folder, tmp_path / "int8", quantize="int8", show_progress=False)
    assert result.fp32_matmuls == 0 and int8_export.fp32_matmuls == 0
    assert "MatMulInteger" in result.operators
    assert cosines(reference, session(result.folder).run(["sentence_embedding"], feeds)[0]).min() >= 0.99


def test_cli_exports_a_model_whose_vocabulary_is_under_1000_tokens(tmp_path, capsys):
    # A valid small model: 64 WordPiece tokens (letters and specials), embeddings of 64 rows.
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), ".", ","]
    folder = write_published_checkpoint(tmp_path / "small-vocab", vocab_size=len(vocabulary))
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    out = tmp_path / "onnx"
    assert cli_main(["export-onnx", str(folder), str(out), "--no-progress"]) == 0, capsys.readouterr().err
    assert "min cosine" in capsys.readouterr().out
    texts = ["tides follow the moon.", "a quiet sea, at dawn"]
    torch_encoder = JinaEncoder.from_pretrained(folder, device="cpu", max_length=128)
    onnx_encoder = JinaEncoder.from_pretrained(out, backend="onnx", max_length=128)
    assert max(max(ids) for ids in torch_encoder.tokenizer(texts)["input_ids"]) < len(vocabulary)
    np.testing.assert_allclose(onnx_encoder.encode(texts), torch_encoder.encode(texts), atol=1e-5)
