#!/usr/bin/env bash
# Serve a LoRA checkpoint (or a base/merged model) behind an OpenAI-style HTTP API.
#   bash tools/swift/deploy_qwen3vl.sh                                   # newest checkpoint, 127.0.0.1:8000
#   ADAPTER=results/lora/v0-.../checkpoint-573 PORT=8001 bash tools/swift/deploy_qwen3vl.sh
#   NO_ADAPTER=1 MODEL=weights/xray-merged INFER_BACKEND=vllm bash tools/swift/deploy_qwen3vl.sh
#   HOST=0.0.0.0 API_KEY_FILE=~/.medswift_key bash tools/swift/deploy_qwen3vl.sh   # reachable from other hosts
# Then: python scripts/serve_client.py --test_images a.png b.dcm   (POST /v1/chat/completions)
# It runs scripts/serve.py: ms-swift's deploy app in one process, with the key checked there (401),
# MAX_NEW_TOKENS as a ceiling per request, generations stopped when their client disconnects, and
# data: URLs as the only image source (see that file). The key travels in the environment or a file,
# never on a command line (`ps` shows those to every user) nor into ms-swift's logged arguments.
# Knobs (env): this launcher's below (--help lists them with their values), and those of
# tools/swift/common.sh (INFER_BACKEND, INFER_BATCH, MAX_NEW_TOKENS, TEMPERATURE, DTYPE...).
# For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

launcher_knobs() {
  # ------------------------------------------------------------ serving
  knob HOST 127.0.0.1                             # another address than this machine's needs an API key
  knob PORT 8000
  knob API_KEY ""                                 # or API_KEY_FILE; required beyond loopback
  knob API_KEY_FILE ""
  knob SERVED_MODEL_NAME ""                       # empty: the model folder's name (the adapter's base, or MODEL)
  knob ALLOW_REMOTE_IMAGES 0                      # 1: also http(s) image URLs, fetched by the server
  knob MAX_BODY_MB 32                             # a larger request body is refused with 413
  knob MAX_REQUEST_CHARS 0                        # 0: 100,000 characters per request, at most 4 per token of max length
  knob MAX_IMAGES 8                               # images per request
  knob BODY_TIMEOUT_S 60                          # a body not all arrived after this many seconds is answered 408
  knob LOG_CONTENT 0                              # 1: log prompts and answers (debugging on test data only)
}
init_launcher infer "$@"

# A key on the command line is already in `ps` by the time it gets here; --host/--port would bypass the checks below.
passthrough=()
while (($#)); do
  case "$1" in
    --api_key | --api_key=* | --api_key_file | --api_key_file=* | --api_key_env | --api_key_env=*)
      die "pass the key as API_KEY=... or API_KEY_FILE=<file> in the environment, not as ${1%%=*} (command lines are visible in ps)"
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

[[ -z "$API_KEY" || -z "$API_KEY_FILE" ]] || die "set API_KEY or API_KEY_FILE, not both"
if [[ -n "$API_KEY_FILE" ]]; then
  [[ -f "$API_KEY_FILE" && -r "$API_KEY_FILE" ]] || die "API_KEY_FILE is not a readable file: $API_KEY_FILE"
  [[ -n "$(tr -d '[:space:]' <"$API_KEY_FILE")" ]] || die "API_KEY_FILE is empty: $API_KEY_FILE"
fi
is_loopback "$HOST" || [[ -n "$API_KEY$API_KEY_FILE" ]] \
  || die "HOST=$HOST is reachable from other machines: set API_KEY or API_KEY_FILE first"
[[ "$ALLOW_REMOTE_IMAGES" == 0 || "$ALLOW_REMOTE_IMAGES" == 1 ]] || die "ALLOW_REMOTE_IMAGES must be 0 or 1, got '$ALLOW_REMOTE_IMAGES'"
[[ "$LOG_CONTENT" == 0 || "$LOG_CONTENT" == 1 ]] || die "LOG_CONTENT must be 0 or 1, got '$LOG_CONTENT'"
is_positive_int "$MAX_BODY_MB" || die "MAX_BODY_MB must be a positive integer, got '$MAX_BODY_MB'"
is_positive_int "$MAX_IMAGES" || die "MAX_IMAGES must be a positive integer, got '$MAX_IMAGES'"
is_positive_int "$BODY_TIMEOUT_S" || die "BODY_TIMEOUT_S must be a positive integer (seconds), got '$BODY_TIMEOUT_S'"
[[ "$MAX_REQUEST_CHARS" =~ ^[0-9]+$ ]] || die "MAX_REQUEST_CHARS must be 0 (automatic) or a positive integer, got '$MAX_REQUEST_CHARS'"
[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT >= 1 && PORT <= 65535)) || die "PORT must be 1-65535, got '$PORT'"
is_positive_int "$INFER_BATCH" || die "INFER_BATCH must be a positive integer, got '$INFER_BATCH'"
is_positive_int "$MAX_NEW_TOKENS" || die "MAX_NEW_TOKENS must be a positive integer, got '$MAX_NEW_TOKENS'"

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

# The key reaches scripts/serve.py through the environment (named by --api_key_env) or a file,
# so the printed command below is complete and holds no secret.
key_args=()
if [[ -n "$API_KEY_FILE" ]]; then
  key_args=(--api_key_file "$API_KEY_FILE")
elif [[ -n "$API_KEY" ]]; then
  export API_KEY
  key_args=(--api_key_env API_KEY)
fi
extra_args=()
[[ -n "$SERVED_MODEL_NAME" ]] && extra_args+=(--served_model_name "$SERVED_MODEL_NAME")
[[ "$ALLOW_REMOTE_IMAGES" == 1 ]] && extra_args+=(--allow_remote_images)
[[ "$LOG_CONTENT" == 1 ]] && extra_args+=(--log_content)

run_or_print "$PYTHON_BIN" "$ROOT/scripts/serve.py" \
  "${model_args[@]}" \
  --infer_backend "$INFER_BACKEND" \
  --torch_dtype "$DTYPE" \
  --host "$HOST" --port "$PORT" \
  --max_batch_size "$INFER_BATCH" \
  --max_new_tokens "$MAX_NEW_TOKENS" --temperature "$TEMPERATURE" \
  --max_body_mb "$MAX_BODY_MB" --max_request_chars "$MAX_REQUEST_CHARS" --max_images "$MAX_IMAGES" \
  --body_timeout_s "$BODY_TIMEOUT_S" \
  "${key_args[@]}" "${extra_args[@]}" \
  "${passthrough[@]}"
