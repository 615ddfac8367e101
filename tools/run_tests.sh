#!/usr/bin/env bash
# Set up .venv (fast when nothing changed) and run the test suite on the CPU.
#   bash tools/run_tests.sh            # everything, one worker per core
#   TEST_WORKERS=0 bash tools/run_tests.sh -k convert   # serially
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
# One worker process per core (pytest-xdist), a test file per worker at a time: a file's tests
# share its expensive fixtures (a trained adapter, a running server). TEST_WORKERS=0 runs serially.
# With several workers, each one's torch (and the ms-swift runs it starts) would otherwise take a
# thread per core, so the cores are oversubscribed: one thread each took 9% less test time
# (docs/developing.md). A value you set is kept.
if [[ "${TEST_WORKERS:-auto}" != 0 ]]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
exec "$ROOT/.venv/bin/python" -m pytest test -ra -n "${TEST_WORKERS:-auto}" --dist loadfile "$@"
