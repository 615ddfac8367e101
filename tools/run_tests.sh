#!/usr/bin/env bash
# Set up .venv (fast when nothing changed) and run the test suite on the CPU.
#   bash tools/run_tests.sh            # everything (about 10 minutes on 2 cores)
#   bash tools/run_tests.sh -k convert # pytest arguments pass through
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest test -ra "$@"
