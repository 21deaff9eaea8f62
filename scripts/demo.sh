#!/usr/bin/env bash
# Real requests against a running service: a prediction, 64 concurrent clients with the batch-size
# histogram, and every client error code. Starts its own service instances on ports 8000 and 8001.
# Usage: scripts/demo.sh [photo.jpg]   (run from the repository root after `make install`)
set -uo pipefail
PY=.venv/bin/python
PHOTO=${1:-../shared/datasets/flower_photos/sunflowers/$(ls ../shared/datasets/flower_photos/sunflowers | head -1)}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

code() { printf '%s -> ' "$1"; shift; curl -s -o "$tmp/body" -w '%{http_code} ' "$@"; cat "$tmp/body"; echo; }

echo "## starting the service (503 while loading, then 200)"
APP_PORT=8000 APP_GRPC_PORT=0 APP_LOG_LEVEL=warning $PY -m app &
until curl -s -o /dev/null localhost:8000/healthz; do sleep 0.05; done
code "GET /readyz while loading" -i localhost:8000/readyz | head -c 400; echo
code "POST /predict/flowers while loading" -F file=@"$PHOTO" localhost:8000/predict/flowers
until [ "$(curl -s -o /dev/null -w '%{http_code}' localhost:8000/readyz)" = 200 ]; do sleep 0.2; done

echo; echo "## curl -F file=@$PHOTO localhost:8000/predict/flowers"
curl -s -F file=@"$PHOTO" localhost:8000/predict/flowers; echo

echo; echo "## 64 concurrent requests"
seq 64 | xargs -P 64 -I{} curl -s -o /dev/null -w '%{http_code}\n' -F file=@"$PHOTO" localhost:8000/predict/flowers | sort | uniq -c
curl -s localhost:8000/metrics | grep -E '^batch_size_(bucket|count|sum)\{.*task="flowers"'

echo; echo "## error codes"
head -c 2000 "$PHOTO" > "$tmp/truncated.jpg"
echo "just some text" > "$tmp/notes.txt"
$PY -c "from PIL import Image; Image.new('1', (8000, 8000)).save('$tmp/bomb.png')"
head -c 22000000 /dev/zero > "$tmp/huge.jpg"
code "400 truncated JPEG" -F file=@"$tmp/truncated.jpg" localhost:8000/predict/flowers
code "404 unknown task" -F file=@"$PHOTO" localhost:8000/predict/unicorns
code "413 over the byte limit" -F file=@"$tmp/huge.jpg" localhost:8000/predict/flowers
code "413 decompression bomb ($(stat -c %s "$tmp/bomb.png") bytes, 64 Mpx)" -F file=@"$tmp/bomb.png" localhost:8000/predict/flowers
code "415 not an image" -F file=@"$tmp/notes.txt" localhost:8000/predict/flowers
code "422 no file" -X POST localhost:8000/predict/flowers
code "422 bad top_k" -F file=@"$PHOTO" 'localhost:8000/predict/flowers?top_k=0'
code "422 v2 bad base64" -H 'content-type: application/json' -d '{"inputs":[{"name":"images","shape":[1],"datatype":"BYTES","data":["%%%"]}]}' localhost:8000/v2/models/flowers/infer

echo; echo "## 503 overloaded: a second instance with APP_MAX_QUEUE_SIZE=4, 64 concurrent clients"
APP_PORT=8001 APP_GRPC_PORT=0 APP_LOG_LEVEL=warning APP_MAX_QUEUE_SIZE=4 $PY -m app &
until [ "$(curl -s -o /dev/null -w '%{http_code}' localhost:8001/readyz)" = 200 ]; do sleep 0.2; done
seq 64 | xargs -P 64 -I{} curl -s -o /dev/null -w '%{http_code}\n' -F file=@"$PHOTO" localhost:8001/predict/flowers | sort | uniq -c
seq 64 | xargs -P 64 -I{} curl -s -D - -o /dev/null -F file=@"$PHOTO" localhost:8001/predict/flowers 2>/dev/null | grep -i -m1 'retry-after'
