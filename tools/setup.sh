#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) from requirements.txt.
#   bash tools/setup.sh
# Fast when nothing changed: the hash of requirements.txt and pyproject.toml is kept in
# .venv and pip is skipped while it matches. PYTHON=python3.11 picks the interpreter.
set -euo pipefail
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then  # its header comment is its usage
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "${BASH_SOURCE[0]}"
  exit 0
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.requirements.sha256"

command -v "$PYTHON" >/dev/null 2>&1 || { echo "error: $PYTHON not found; install Python 3.10-3.12 or set PYTHON=" >&2; exit 2; }
"$PYTHON" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' \
  || { echo "error: $("$PYTHON" --version 2>&1) is not supported; use Python 3.10-3.12 (set PYTHON=)" >&2; exit 2; }

# System tools from Debian's packages: Java for pycocoevalcap (English tokens, METEOR in
# scripts/evaluate.py); Chromium for the demo's browser test, driven by Playwright
# (never `playwright install`, which downloads its own browser), and a CJK font for it.
missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# A CJK font, so that Chinese reports render in the browser and its screenshots instead of boxes.
[[ -n "$(fc-list :lang=zh 2>/dev/null)" ]] || missing+=(fonts-noto-cjk)
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing ${missing[*]} (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[setup] warning: missing ${missing[*]}; English METEOR needs Java, the demo's browser test Chromium" \
      "(and a CJK font to show Chinese)" >&2
  fi
fi

# What the install depends on: the pins and this script's own steps (e.g. the RadEval reference files below).
want="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" "$ROOT/tools/setup.sh" | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "[setup] .venv is up to date ($VENV)"
  exit 0
fi
# A .venv that is a link belongs to another checkout (the README tests link theirs to the project's):
# installing from here would point its editable `medswift` at this copy, which may be a temporary folder.
if [[ -L "$VENV" ]]; then
  echo "error: .venv links to $(readlink -f "$VENV"), which is not up to date; run bash tools/setup.sh in its checkout" >&2
  exit 1
fi

start=$SECONDS
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
echo "[setup] installing pinned requirements into $VENV (first time: a few minutes)"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$ROOT/requirements.txt"
# The library (scripts/medswift) in editable mode: `import medswift` works from the scripts, the
# demo, the benchmarks and the tests, and edits take effect without reinstalling.
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT"
# The field metrics' packages (pyproject's [metrics] extra): the suite cross-checks the report
# card's CheXbert and BERTScore figures against them (test/test_field_metrics.py), and RaTEScore against
# the ratescore package (test/test_ratescore.py; no medspacy: docs/metrics.md says why).
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-build-isolation -e "${ROOT}[metrics]"
# RadEval 2.2.1's files, for the suite's GREEN cross-check only (it loads two of them by path): outside
# site-packages and without its requirements (spaCy, stanza, medspacy; they would downgrade numpy), so
# nothing imports it and `pip check` does not see it.
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --upgrade \
  --target "$VENV/reference/radeval" radeval==2.2.1
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check >&2; exit 1; }
echo "$want" >"$STAMP"
echo "[setup] done in $((SECONDS - start)) s"
