#!/usr/bin/env bash
# The GPU check (experiments/gpu/README.md): the device-path tests, a search of the joint space and
# the realized-savings rows on one device, written as one JSON.
#   bash experiments/gpu/run.sh [--device cuda|cpu] [--tiny] [--out PATH] [--workdir DIR] [--set K=V]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
exec "$python" "$root/experiments/gpu/run.py" "$@"
