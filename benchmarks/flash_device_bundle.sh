#!/usr/bin/env bash
# FlashAttention-4 for the GPU machine (Python 3.12, no network) in two carries of < 64 MiB each.
# Its compiler library (nvidia-cutlass-dsl-libs-cu13, 237 MB unpacked) does not fit one call beside
# the checkout, so its two big .so files travel xz-compressed: part A (.fa4a, 61 MB: every wheel and
# the MLIR library) and part B (.fa4b, 13 MB: the CuTe DSL runtime). Move the shipped model's
# model.safetensors out of the checkout for both calls (benchmarks use random weights), make the two
# calls back to back (the machine stays warm 30 s), and run with
#   PYTHONPATH=.:/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages
# (the wheel's .pth file that adds dsl_packages is not read from a PYTHONPATH folder).
#   call 1: bash .fa4a/install.sh        (carry .fa4a)
#   call 2: bash .fa4b/install.sh; ...   (carry .fa4b)
set -euo pipefail
work=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d "$work" --pre \
    flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
    nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 quack-kernels==0.6.5 \
    apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5
mkdir -p .fa4a .fa4b "$work/cu13"
grep -qsx '/.fa4a/' .git/info/exclude || printf '/.fa4a/\n/.fa4b/\n' >> .git/info/exclude
(cd "$work/cu13" && unzip -q ../nvidia_cutlass_dsl_libs_cu13-*.whl)
ir=nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu13.cpython-312-x86_64-linux-gnu.so
rt=nvidia_cutlass_dsl/cu13/lib/libcute_dsl_runtime.so
xz -9e -T2 -c "$work/cu13/$ir" > .fa4a/ir.xz
xz -9e -T2 -c "$work/cu13/$rt" > .fa4b/rt.xz
tar -cf .fa4a/cu13-rest.tar -C "$work/cu13" --exclude="$(basename "$ir")" --exclude="$rt" .
find "$work" -maxdepth 1 -name '*.whl' ! -name 'nvidia_cutlass_dsl_libs_cu13-*' -exec cp {} .fa4a/ \;
cat > .fa4a/install.sh <<INSTALL
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .fa4a/*.whl
tar -xf .fa4a/cu13-rest.tar -C /tmp/site
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.fa4a/ir.xz'), open('/tmp/site/$ir', 'wb'))"
INSTALL
cat > .fa4b/install.sh <<INSTALL
set -e
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.fa4b/rt.xz'), open('/tmp/site/$rt', 'wb'))"
chmod +x /tmp/site/$rt /tmp/site/$ir
INSTALL
du -sh .fa4a .fa4b
