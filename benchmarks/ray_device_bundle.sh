#!/usr/bin/env bash
# Packs Ray (with the Ray Data parts) and the few packages the GPU machine lacks into one .tar.xz
# small enough to carry there (a call carries 64 MiB in all, the checkout included; ray's wheel
# alone is 79 MB). Ray's Java jar, its RLlib/Serve/LLM/Tune/Train libraries and the dashboard's web
# assets are left out (Ray Data does not use them), and its binaries lose their symbol tables.
#
#   benchmarks/ray_device_bundle.sh WHEELS_DIR OUT.tar.xz    # WHEELS_DIR: the wheels, from pip download
#
# Wheels for the GPU machine (Python 3.12), as its README says, e.g.:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d WHEELS_DIR \
#     ray==2.60.0 jsonschema jsonschema-specifications referencing rpds-py \
#     qdrant-client pydantic pydantic-core annotated-types typing-inspection typing-extensions protobuf
# There: mkdir -p /tmp/site && tar -xJf OUT.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PYTHONPATH
set -euo pipefail
wheels=$1
out=$(realpath -m "$2")
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
for wheel in "$wheels"/*.whl; do
    unzip -q -o "$wheel" -d "$site"  # unzip keeps the binaries' executable bits
done
rm -rf "$site"/ray/jars "$site"/ray/rllib "$site"/ray/serve "$site"/ray/llm "$site"/ray/tune "$site"/ray/train \
    "$site"/ray/dashboard/client/build
find "$site" -name '__pycache__' -prune -exec rm -rf {} +
find "$site" -name '*.so' -exec strip --strip-unneeded {} +
strip --strip-unneeded "$site"/ray/core/src/ray/raylet/raylet "$site"/ray/core/src/ray/gcs/gcs_server
tar -C "$site" -cf - . | xz -9 -T0 >"$out"
ls -l "$out"
