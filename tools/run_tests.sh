#!/usr/bin/env bash
# Set up .venv (fast when nothing changed) and run the test suite on the CPU.
#   bash tools/run_tests.sh            # everything (about 10 minutes on 2 cores)
#   bash tools/run_tests.sh -k convert # pytest arguments pass through
set -euo pipefail
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then  # its header comment is its usage
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "${BASH_SOURCE[0]}"
  echo "Other arguments go to pytest (.venv/bin/python -m pytest --help lists them)."
  exit 0
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest test -ra "$@"
