#!/usr/bin/env bash
# A short tour of the local lake with the stock rucio CLI: who am I, which RSEs, upload and download a file
# on XRD1 over root://, and check the copy is byte-identical. Re-runnable: each run uses a new file name.
set -euo pipefail
cd "$(dirname "$0")/.."
DATALAKE=${DATALAKE:-.venv/bin/datalake}
PYTHON="$(dirname "$(command -v "$DATALAKE")")/python"  # the venv datalake runs from

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -z "${TOUR_SKIP_UP:-}" ]; then  # the docker client container finds the servers already up
    step "datalake testbed up"
    "$DATALAKE" testbed up
fi
eval "$("$DATALAKE" testbed env)"

step "rucio whoami   (RUCIO_CONFIG=$RUCIO_CONFIG)"
rucio whoami
step "rucio rse list, with each RSE's attributes"
for rse in $(rucio rse list); do
    echo "$rse: $(rucio rse attribute list "$rse" | grep -E '^(site|country|tier|access):' | tr '\n' ' ')"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
name="tour-$(date +%Y%m%dT%H%M%S)-$RANDOM.dat"
head -c 1048576 /dev/urandom > "$work/$name"

step "rucio upload --rse XRD1 --scope darkmatter $name"
rucio upload --rse XRD1 --scope darkmatter "$work/$name"
rucio replica list file "darkmatter:$name"

step "rucio download darkmatter:$name"
rucio download --dir "$work/download" "darkmatter:$name"
cmp "$work/$name" "$work/download/darkmatter/$name"
echo "byte-identical: $(sha256sum < "$work/$name" | cut -c1-16)..."

step "datalake policy check policies/"
"$DATALAKE" policy check policies/

dataset="collider:tour_$(date +%Y%m%dT%H%M%S)_$RANDOM"
mkdir -p "$work/run2025"
for i in $(seq -w 1 20); do head -c 262144 /dev/urandom > "$work/run2025/${dataset#*:}_events_$i.root"; done
step "datalake register: 20 files as $dataset under policies/lhc-collaboration.yaml"
"$DATALAKE" register "$work/run2025" --dataset "$dataset" --policy policies/lhc-collaboration.yaml --rse XRD1 \
    --meta "creators=Tour Collaboration; Doe, Jane" --meta "title=Tour dataset" --meta publisher=CERN \
    --meta publication_year=2026 --meta resource_type=Dataset --meta experiment=TOUR --meta run_period=Run2025 \
    --meta run_end=2025-12-31 --meta collision_energy_tev=13.6 --meta event_count=20000
step "datalake status $dataset"
"$DATALAKE" status "$dataset"
step "rucio sees the same: rule list, metadata"
rucio rule list --did "$dataset"
rucio did metadata list "$dataset" --plugin JSON
step "Rucio's conveyor makes the policy's second custodial copy through datalake's transfer service"
"$PYTHON" - "$dataset" <<'PY'
"""Wait for the dataset's rules through Rucio's own client API: until every rule is OK (at most 120 s), failing
at once on a STUCK one. Says what it waited for and how long."""
import sys
import time

from rucio.client import Client

scope, name = sys.argv[1].split(":", 1)
client, began = Client(), time.monotonic()
while True:
    rules = list(client.list_did_rules(scope, name))
    states = sorted(r["state"] for r in rules)
    if set(states) == {"OK"} or "STUCK" in states or time.monotonic() - began > 120:
        break
    time.sleep(0.5)
print(f"waited {time.monotonic() - began:.1f} s for {len(rules)} rules of {sys.argv[1]}: {', '.join(states)}")
sys.exit(0 if set(states) == {"OK"} else 1)
PY
rucio rule list --did "$dataset"
"$DATALAKE" transfer status
as_analyst() { (eval "$("$DATALAKE" testbed env --account analyst)" && "$@"); }  # the analyst's token and cluster
step "the storage checks who asks: an xrdcp of a collaboration-only file without a token is refused"
url=$(rucio replica list file "darkmatter:$name" --pfns | head -1)
echo "xrdcp $url   (no token)"
refusal=$( (unset BEARER_TOKEN_FILE BEARER_TOKEN; HOME="$work" xrdcp -f "$url" "$work/anonymous.dat" 2>&1) || true)
echo "$refusal"
grep -q "Auth failed" <<< "$refusal" || { echo "the anonymous read was not refused by the server" >&2; exit 1; }
step "as the analyst: datalake pull $dataset   (parallel, adler32-verified, resumable)"
as_analyst "$DATALAKE" pull "$dataset" --to "$work/pulled"
for f in "$work"/run2025/*.root; do cmp "$f" "$work/pulled/${dataset%%:*}/$(basename "$f")"; done
echo "all 20 files byte-identical to the originals"
step "pulled again: nothing is copied twice"
as_analyst "$DATALAKE" pull "$dataset" --to "$work/pulled"
step "datalake share $dataset --with referee@uni.example.org --for 10min   (a referee reads it, nothing else)"
"$DATALAKE" share "$dataset" --with referee@uni.example.org --for 10min --to "$work/share"
mkdir -p "$work/refereed"
(unset BEARER_TOKEN; export BEARER_TOKEN_FILE="$work/share/token-1"; HOME="$work" \
    xrdcp -f -s --infiles "$work/share/files-1.txt" "$work/refereed/")
for f in "$work"/run2025/*.root; do cmp "$f" "$work/refereed/$(basename "$f")"; done
echo "the referee's copies are byte-identical; their token opens these $(wc -l < "$work/share/files-1.txt") files only"
step "datalake policy plan $dataset --now 2036-01-01   (what-if: ten years after the run, it is open data)"
"$DATALAKE" policy plan "$dataset" --now 2036-01-01

nano="collider:nanoaod_$(date +%Y%m%dT%H%M%S)_$RANDOM"
step "NanoAOD-like events (2 files x 200,000, a Z -> mumu component) registered as $nano"
"$PYTHON" -c "from datalake.testbed import nanoaod; nanoaod.write_files('$work/nano', 2, 200_000, prefix='${nano#*:}')"
"$DATALAKE" register "$work/nano" --dataset "$nano" --policy policies/lhc-collaboration.yaml --rse XRD1 \
    --meta "creators=Tour Collaboration; Doe, Jane" --meta "title=Tour NanoAOD" --meta publisher=CERN \
    --meta publication_year=2026 --meta resource_type=Dataset --meta experiment=TOUR --meta run_period=Run2025 \
    --meta run_end=2025-12-31 --meta collision_energy_tev=13.6 --meta event_count=400000 >/dev/null
step "as the analyst: datalake process $nano --fn datalake.examples.dimuon:mass_spectrum   (beside the data, on Dask)"
as_analyst "$DATALAKE" process "$nano" --fn datalake.examples.dimuon:mass_spectrum \
    --out "$DATALAKE_TESTBED_DIR/tour/dimuon"   # dimuon.png stays for a look
step "datalake deliver: a dimuon skim as Parquet on XRD2, registered with provenance"
"$DATALAKE" deliver "$nano" --columns 'Muon_*' --where 'nMuon >= 2 and max(Muon_pt) > 25' --to XRD2 \
    --as "${nano}_skim" --meta "title=Tour dimuon skim"
rucio did metadata list "${nano}_skim" --plugin JSON | grep -E '^datalake_(derived_from|selection|columns)'

if [ -z "${TOUR_SKIP_UP:-}" ]; then
    step "datalake testbed status"
    "$DATALAKE" testbed status
fi
echo
echo 'The lake stays up. Use it from your shell with:  eval "$(.venv/bin/datalake testbed env)"'
echo 'Stop it with:  .venv/bin/datalake testbed down   (add --wipe to delete its data)'
