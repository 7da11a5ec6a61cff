"""A model folder never runs its own code: not through the API, not through the CLI, not when stdin says yes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_published_checkpoint

# Python that leaves a marker file wherever it is imported from.
PAYLOAD = "from pathlib import Path\nPath(__file__).with_name('RAN-{name}').write_text('code from the model folder ran')\n"


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory) -> Path:
    """A valid checkpoint whose config and tokenizer config point transformers at code in the folder."""
    folder = write_published_checkpoint(tmp_path_factory.mktemp("hostile") / "model")
    for name in ("tokenization_evil", "configuration_evil", "modeling_evil"):
        (folder / f"{name}.py").write_text(PAYLOAD.format(name=name))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config.update(
        tokenizer_class="EvilTokenizer",
        auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", "tokenization_evil.EvilTokenizer"]},
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModel": "modeling_evil.EvilModel",
        "AutoTokenizer": ["tokenization_evil.EvilTokenizer", None],
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def markers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("RAN-*"))


def test_api_loads_without_running_folder_code(hostile_folder):
    script = (
        "import sys\n"
        "from jina_rag import JinaEncoder\n"
        "encoder = JinaEncoder.from_pretrained(sys.argv[1])\n"
        "vectors = encoder.encode(['a text about tides'])\n"
        "print(vectors.shape)\n"
    )
    # stdin answers "y" to transformers' "run the custom code?" prompt: nothing may ask it.
    result = subprocess.run(
        [sys.executable, "-c", script, str(hostile_folder)], input="y\n" * 5,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "(1, 64)" in result.stdout
    assert markers(hostile_folder) == []


def test_cli_info_and_embed_without_running_folder_code(hostile_folder, tmp_path):
    cli = shutil.which("jina-rag")
    assert cli, "the jina-rag command is installed with the package"
    for args in (["info", "--model", str(hostile_folder)], ["embed", "tides", "--model", str(hostile_folder), "-o", str(tmp_path / "v.npy")]):
        result = subprocess.run([cli, *args], input="y\n" * 5, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "v.npy").is_file()
    assert markers(hostile_folder) == []


def test_tokenizer_from_published_files_matches_the_vocabulary(checkpoint):
    from jina_rag import load_tokenizer
    from conftest import bert_tokenizer

    ours = load_tokenizer(checkpoint)
    reference = bert_tokenizer()
    text = "Reapply commits on top of another base tip, 8192 tokens."
    assert ours(text)["input_ids"] == reference(text)["input_ids"]
    assert ours.pad_token_id == reference.pad_token_id
    assert ours.model_max_length == reference.model_max_length


def test_tokenizer_from_vocab_txt_alone(tmp_path, checkpoint):
    from jina_rag import load_tokenizer
    from conftest import VOCAB_DIR, bert_tokenizer

    folder = tmp_path / "vocab-only"
    folder.mkdir()
    shutil.copy(checkpoint / "config.json", folder)
    shutil.copy(Path(VOCAB_DIR) / "vocab.txt", folder)
    text = "Whole documents, not chunks."
    assert load_tokenizer(folder)(text)["input_ids"] == bert_tokenizer()(text)["input_ids"]


def test_folder_without_tokenizer_files_is_a_clear_error(tmp_path, checkpoint):
    from jina_rag import ModelNotFoundError, load_tokenizer

    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    shutil.copy(checkpoint / "config.json", folder)
    with pytest.raises(ModelNotFoundError, match="no tokenizer files"):
        load_tokenizer(folder)
