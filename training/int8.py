"""int8 copies of model folders, a quarter of their fp32 size, to carry where size is short.

```bash
python -m training.int8 pack jina_rag/models/jina-rag-small-en data/gpu-default/init-int8
python -m training.int8 unpack data/gpu-default/init-int8 runs/init       # model.safetensors (fp32) again
```

A device call carries at most 64 MiB, so a model to start training from and a teacher do not
both fit in fp16. ``pack`` stores every matrix as int8 with one fp32 scale per row
(``weights.int8.safetensors``: ``NAME.int8`` and ``NAME.scale``) and every other tensor in fp16,
and copies the folder's other files; ``unpack`` writes ``model.safetensors`` back in fp32. The
round trip changes a weight by at most half a step of its row's scale (peak / 254), which a
training run started from the copy washes out; it is not a way to ship a model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

PACKED_WEIGHTS = "weights.int8.safetensors"
WEIGHTS = "model.safetensors"


def quantize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrices as int8 rows scaled to their largest magnitude; other tensors in fp16."""
    packed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if tensor.ndim == 2:
            scale = tensor.float().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
            packed[f"{name}.int8"] = torch.round(tensor.float() / scale).to(torch.int8)
            packed[f"{name}.scale"] = scale.squeeze(1)
        else:
            packed[name] = tensor.to(torch.float16)
    return packed


def dequantize_state(packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fp32 state a :func:`quantize_state` result stands for."""
    state = {name: tensor.float() for name, tensor in packed.items() if not name.endswith((".int8", ".scale"))}
    for name in (n.removesuffix(".int8") for n in packed if n.endswith(".int8")):
        state[name] = packed[f"{name}.int8"].float() * packed[f"{name}.scale"][:, None]
    return state


def pack_folder(folder: Path, out: Path, keep: Callable[[str], bool] = lambda name: True) -> Path:
    """``out`` = ``folder`` with ``model.safetensors`` replaced by its int8 copy (tensors ``keep`` accepts)."""
    from safetensors.torch import load_file, save_file

    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: pack a folder in the published layout (model.safetensors)")
    state = {name: tensor for name, tensor in load_file(str(weights)).items() if keep(name)}
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns(WEIGHTS, "pytorch_model.bin"))
    save_file(quantize_state(state), str(out / PACKED_WEIGHTS))
    return out


def unpack_folder(packed: Path, out: Path) -> Path:
    """``out`` = the packed folder with ``model.safetensors`` (fp32) in place of the int8 weights."""
    from safetensors.torch import load_file, save_file

    weights = packed / PACKED_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: not a folder written by python -m training.int8 pack")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(packed, out, ignore=shutil.ignore_patterns(PACKED_WEIGHTS))
    save_file(dequantize_state(load_file(str(weights))), str(out / WEIGHTS))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("pack", "unpack"))
    parser.add_argument("folder", type=Path, help="pack: a published-layout folder; unpack: a packed folder")
    parser.add_argument("out", type=Path, help="the folder to write (replaced if it exists)")
    args = parser.parse_args(argv)
    out = (pack_folder if args.command == "pack" else unpack_folder)(args.folder, args.out)
    print(f"{out}: {sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
