"""``python -m training <config.yaml> [key.sub=value ...]`` (also under ``torchrun --nproc_per_node N``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

from training.config import ConfigError, load_config
from training.data import DataError
from training.loop import train


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="run one training stage from a YAML config")
    parser.add_argument("config", help="YAML run config (see training/configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config entries, e.g. train.steps=20")
    parser.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                        help="stop (with a checkpoint) after this many steps; the next run resumes there")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"python -m training: config error: {error}", file=sys.stderr)
        return 2
    try:
        with logging_redirect_tqdm():
            checkpoint = train(config, stop_after=args.stop_after)
    except (ConfigError, DataError, FileNotFoundError) as error:
        print(f"python -m training: error: {error}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"checkpoint: {checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
