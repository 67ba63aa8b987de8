#!/usr/bin/env bash
# The Python client installs and works with only the `client` extra (make check-client).
#
# 1. Installs the project (a copy of its sources, as a wheel) with only the client
#    extra, under constraints.txt, into a throw-away virtualenv.
# 2. Builds a three-document index with the full .venv (`trove ingest`) and serves
#    it on 127.0.0.1 (`trove serve`, an HS256 secret made up for this run).
# 3. Runs scripts/client_install_check.py in the client virtualenv: no torch, numpy,
#    unstructured, Dagster or boto3 there; search returns passages with citations;
#    a reader of hr/ finds the salary bands, an outsider neither finds nor fetches them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PYTHON=${PYTHON:-python3}
TROVE=${TROVE:-$repo/.venv/bin/trove}
work=$(mktemp -d)
server=""
cleanup() {
    if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== client-only virtualenv"
# A copy, so the build leaves nothing (build/, *.egg-info) in the working tree.
mkdir "$work/src"
tar -c --exclude=__pycache__ --exclude='*.pyc' \
    core connectors retrieval pipelines assets trove pyproject.toml README.md LICENSE |
    tar -x -C "$work/src"
"$PYTHON" -m venv "$work/client"
"$work/client/bin/pip" install --quiet -c constraints.txt "$work/src[client]"
packages=$("$work/client/bin/pip" list --format=freeze --exclude pip --exclude setuptools)
echo "installed, besides pip and setuptools: $(echo "$packages" | wc -l) packages" \
    "($(echo "$packages" | cut -d= -f1 | tr '\n' ' '| sed 's/ $//')); virtualenv" \
    "$(du -sh "$work/client" | cut -f1) on disk"

echo "== a real server on 127.0.0.1"
site="$work/site"
mkdir -p "$site/corpus/handbook" "$site/corpus/hr"
cat > "$site/corpus/handbook/leave.md" <<'EOF'
# Annual leave

Every employee receives 28 days of paid annual leave per calendar year. Ask your
manager before booking more than ten consecutive days. Pay questions go to HR.
EOF
cat > "$site/corpus/handbook/travel.md" <<'EOF'
# Travel

Book trains for trips under four hours. Hotels in Rotterdam and Austin are booked
through the travel desk; keep receipts for the expense report.
EOF
cat > "$site/corpus/hr/salary-bands.md" <<'EOF'
# Salary bands 2026

The salary band for a senior engineer (L4) in Rotterdam runs from 78000 to
104000 EUR a year; in Austin from 140000 to 182000 USD. Bands are confidential.
EOF
cat > "$site/trove.yaml" <<'EOF'
index: {backend: embedded, path: .trove/index}
sources:
  - name: site
    type: filesystem
    path: ./corpus
    acl:
      default: {allow_groups: [all-staff]}
      rules:
        - {match: "hr/**", allow_groups: [hr]}
EOF
export TROVE_API__JWT_SECRET
TROVE_API__JWT_SECRET=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
"$TROVE" ingest --config "$site/trove.yaml" > "$work/ingest.log" 2>&1 ||
    { cat "$work/ingest.log"; exit 1; }
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TROVE" serve --config "$site/trove.yaml" --host 127.0.0.1 --port "$port" > "$work/serve.log" 2>&1 &
server=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
    if "$work/client/bin/python" -c "import httpx, sys; sys.exit(httpx.get('$url/readyz').status_code != 200)" 2>/dev/null; then
        break
    fi
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 0.5
done
reader=$("$TROVE" token --config "$site/trove.yaml" --user dana --groups all-staff,hr --ttl 10m)
outsider=$("$TROVE" token --config "$site/trove.yaml" --user sam --groups all-staff,engineering --ttl 10m)

echo "== the client, from the client-only virtualenv"
(cd "$work" && "$work/client/bin/python" "$repo/scripts/client_install_check.py" "$url" "$reader" "$outsider") ||
    { echo "-- server log"; tail -50 "$work/serve.log"; exit 1; }
echo "client install check passed"
