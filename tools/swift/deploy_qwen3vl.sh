#!/usr/bin/env bash
# Serve a LoRA checkpoint (or a base/merged model) behind an OpenAI-style HTTP API.
#   bash tools/swift/deploy_qwen3vl.sh                                   # newest checkpoint, 127.0.0.1:8000
#   ADAPTER=results/lora/v0-.../checkpoint-573 PORT=8001 bash tools/swift/deploy_qwen3vl.sh
#   NO_ADAPTER=1 MODEL=weights/xray-merged INFER_BACKEND=vllm bash tools/swift/deploy_qwen3vl.sh
#   HOST=0.0.0.0 API_KEY=$(openssl rand -hex 16) bash tools/swift/deploy_qwen3vl.sh   # reachable from other hosts
# Then: python scripts/serve_client.py --test_images a.png b.dcm   (POST /v1/chat/completions)
# ms-swift 4.x `swift deploy` binds 0.0.0.0 unless told otherwise, so --host is always passed;
# a non-loopback HOST needs API_KEY (or --api_key). ms-swift answers a wrong or missing key
# with HTTP 400 "API key error", and it writes its arguments, the key included, to its log.
# Knobs (env): HOST (127.0.0.1), PORT (8000), SERVED_MODEL_NAME (medswift), API_KEY, and those
# of tools/swift/common.sh (INFER_BACKEND, INFER_BATCH, MAX_NEW_TOKENS, TEMPERATURE, DTYPE...).
# For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
SERVED_MODEL_NAME="${SERVED_MODEL_NAME:-medswift}"
API_KEY="${API_KEY:-}"

# --api_key on the command line is taken like API_KEY; --host/--port would bypass the checks below.
passthrough=()
while (($#)); do
  case "$1" in
    --api_key)
      (($# >= 2)) || die "--api_key needs a value"
      API_KEY="$2"
      shift 2
      ;;
    --api_key=*)
      API_KEY="${1#--api_key=}"
      shift
      ;;
    --host | --host=* | --port | --port=*)
      die "set HOST / PORT in the environment instead of passing ${1%%=*}"
      ;;
    *)
      passthrough+=("$1")
      shift
      ;;
  esac
done

case "$HOST" in
  127.0.0.1 | localhost | ::1) ;;
  *) [[ -n "$API_KEY" ]] || die "HOST=$HOST is reachable from other machines: set API_KEY (or pass --api_key) first" ;;
esac
[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT >= 1 && PORT <= 65535)) || die "PORT must be 1-65535, got '$PORT'"
is_positive_int "$INFER_BATCH" || die "INFER_BATCH must be a positive integer, got '$INFER_BATCH'"

case "$INFER_BACKEND" in
  transformers) ;;
  vllm)
    # find_spec looks for the package without importing it (no torch, no CUDA init).
    "$PYTHON_BIN" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm") is None)' \
      || die "INFER_BACKEND=vllm but vllm is not installed in $PYTHON_BIN (pip install vllm, or use INFER_BACKEND=transformers)"
    ;;
  *) die "INFER_BACKEND must be transformers or vllm, got '$INFER_BACKEND'" ;;
esac

resolve_model_args
resolve_dtype

# ms-swift moves to the next free port without a word when PORT is taken; clients would miss it.
if [[ "$DRY_RUN" != "1" ]]; then
  "$PYTHON_BIN" -c 'import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)' "$HOST" "$PORT" || die "cannot listen on $HOST:$PORT (port in use, or not an address of this machine)"
fi

key_args=()
[[ -n "$API_KEY" ]] && key_args=(--api_key "$API_KEY")  # run_or_print masks it in what it shows

run_or_print "$SWIFT_BIN" deploy \
  "${model_args[@]}" \
  --infer_backend "$INFER_BACKEND" \
  --torch_dtype "$DTYPE" \
  --host "$HOST" --port "$PORT" \
  --served_model_name "$SERVED_MODEL_NAME" \
  --max_batch_size "$INFER_BATCH" \
  --max_new_tokens "$MAX_NEW_TOKENS" --temperature "$TEMPERATURE" \
  "${key_args[@]}" \
  "${passthrough[@]}"
