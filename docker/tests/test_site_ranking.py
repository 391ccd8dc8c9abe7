"""The replica ranking seen on the site lake's links: a pull reads the replica Rucio's distances call nearest to
its site, and only that site's uplink carries the bytes. Driven from the machine that runs the lake, as the
faults are (``docker/sites.sh check``)."""

from __future__ import annotations

import json
import uuid

from sitelake import container, on_client, podman, sent

FILES, SIZE = 4, 2_000_000


def test_a_pull_at_desy_reads_the_replica_rucio_calls_nearer_and_only_its_uplink_carries_it():
    name = f"ranking_{uuid.uuid4().hex[:10]}"
    setup = (
        "import json, os, time\n"
        "from rucio.client import Client\nfrom rucio.client.uploadclient import UploadClient\n"
        f"os.makedirs('/tmp/{name}')\npaths = []\n"
        f"for k in range({FILES}):\n"
        f"    paths.append(f'/tmp/{name}/{name}_{{k}}.dat')\n"
        f"    open(paths[-1], 'wb').write(os.urandom({SIZE}))\n"
        "UploadClient().upload([{'path': p, 'rse': 'XRD1', 'did_scope': 'collider'} for p in paths])\n"
        f"c = Client()\nc.add_dataset('collider', '{name}')\n"
        f"c.attach_dids('collider', '{name}', [{{'scope': 'collider', 'name': os.path.basename(p)}} for p in paths])\n"
        f"c.add_replication_rule([{{'scope': 'collider', 'name': '{name}'}}], 1, 'XRD3')\n"
        "began = time.monotonic()\n"
        f"while {{r['state'] for r in c.list_did_rules('collider', '{name}')}} != {{'OK'}}:\n"
        "    assert time.monotonic() - began < 300, 'the rule to XRD3 did not complete'\n"
        "    time.sleep(0.5)\n"
        "print(json.dumps({rse: c.get_distance(rse, 'XRD2')[0]['distance'] for rse in ('XRD1', 'XRD3')}))\n"
    )
    made = on_client(f"python - <<'PY'\n{setup}PY")
    distance = json.loads(made.stdout.strip().splitlines()[-1])  # Rucio's, from each replica's RSE to DESY's
    nearer, farther = sorted(distance, key=distance.get)
    assert distance[nearer] < distance[farther], distance
    site = {"XRD1": "xrd1", "XRD3": "xrd3"}
    before = {rse: sent(site[rse]) for rse in distance}
    script = f'eval "$(datalake testbed env)" && datalake pull collider:{name} --to /tmp/{name}-pulled --json'
    pulled = podman("exec", "-e", "DATALAKE_SITE=DESY", container("worker-DESY"), "bash", "-c", script)
    after = {rse: sent(site[rse]) for rse in distance}
    summary = json.loads(pulled.stdout)
    assert (summary["copied"], summary["sources"]) == (FILES, {nearer: FILES}), summary
    assert after[nearer] - before[nearer] >= FILES * SIZE  # the bytes crossed the nearer site's uplink ...
    assert after[farther] - before[farther] < SIZE // 10  # ... and not a file's worth left the other
