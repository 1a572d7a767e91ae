#!/usr/bin/env bash
# Manual check: one session, one turn, counted at the SSE level with curl.
#   bench/python/check.sh BASE_URL TOKEN [MODEL]     (MODEL default stream:1000:0:200)
# Prints the event counts by name, the SSE bytes up to and including `result`, and the
# distinct text sizes of the message_complete events. SSE_OUT=file keeps the raw stream.
set -euo pipefail
base=${1:?base url}; token=${2:?token}; model=${3:-stream:1000:0:200}
auth=(-H "authorization: Bearer $token")
out=$(mktemp)
sid=$(curl -sf "${auth[@]}" -H 'content-type: application/json' -d "{\"model\":\"$model\"}" "$base/sessions" \
  | sed -E 's/.*"session_id": *"([^"]+)".*/\1/')
curl -sfN "${auth[@]}" "$base/sessions/$sid/stream" > "$out" &
stream=$!
sleep 0.3
curl -sf "${auth[@]}" -H 'content-type: application/json' \
  -d '{"type":"user_message","content":"go"}' "$base/sessions/$sid/input"
for _ in $(seq 600); do grep -q '^event: result' "$out" && break; sleep 0.05; done
curl -sf -X DELETE "${auth[@]}" "$base/sessions/$sid"
wait "$stream" || true
python3 - "$out" <<'PY'
import collections, json, re, sys
raw = open(sys.argv[1], 'rb').read()
frames = raw.split(b'\n\n')
counts = collections.Counter(); upto_result = 0; sizes = collections.Counter(); ids = []
done_result = False
for f in frames:
    if not f.strip():
        continue
    name = re.search(rb'^event: (.*)$', f, re.M)
    name = name.group(1).decode() if name else '(comment)'
    counts[name] += 1
    if not done_result:
        upto_result += len(f) + 2
    if name == 'message_complete':
        data = json.loads(re.search(rb'^data: (.*)$', f, re.M).group(1))
        sizes[len(data['message']['content'][0]['text'].encode())] += 1
        ids.append(data['message_id'])
    if name == 'result':
        done_result = True
        print('result frame:', f.decode().replace('\n', ' | '))
    if name == 'message_complete' and len(ids) == 1:
        print('first message_complete frame:', f.decode()[:300].replace('\n', ' | '))
print('events:', dict(counts))
print('SSE bytes total:', len(raw), ' up to result:', upto_result)
print('message_complete text sizes:', dict(sizes), ' ids:', ids[:1], '...', ids[-1:])
PY
if [ -n "${SSE_OUT:-}" ]; then cp "$out" "$SSE_OUT"; fi
rm -f "$out"
