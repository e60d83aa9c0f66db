"""Check that the demo's results are those recorded before a refactoring.

``python benchmarks/demo_unchanged.py record RESULTS`` writes ``demo_fingerprint.json`` beside
this file: a SHA-256 of the data of every NIfTI map and of every table the demo writes.
``python benchmarks/demo_unchanged.py check RESULTS`` compares a fresh run (``make demo``
writes ``results/clbp``) with it and lists each file that differs. The maps are compared by
their voxel values (the data array's bytes), so a change of header metadata alone passes,
and a change in any z, p or p_fwe value fails.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

FINGERPRINT = Path(__file__).with_name("demo_fingerprint.json")


def fingerprint(results: Path) -> dict[str, str]:
    """SHA-256 of each map's voxel values and of each table's text, by relative path."""
    digests = {}
    for path in sorted(results.rglob("*")):
        name = str(path.relative_to(results))
        if name.endswith(".nii.gz"):
            data = np.ascontiguousarray(np.asanyarray(nib.load(path).dataobj))
            digests[name] = hashlib.sha256(data.dtype.str.encode() + data.tobytes()).hexdigest()
        elif name.endswith(".tsv"):
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    results = Path(argv[1])
    found = fingerprint(results)
    if not found:
        print(f"{results}: no maps or tables; run `make demo` first")
        return 2
    if argv[0] == "record":
        FINGERPRINT.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(found)} files of {results} in {FINGERPRINT}")
        return 0
    recorded = json.loads(FINGERPRINT.read_text())
    changed = sorted(name for name in recorded if found.get(name) != recorded[name])
    added = sorted(set(found) - set(recorded))
    for name in changed:
        print(f"differs: {name}" if name in found else f"missing: {name}")
    for name in added:
        print(f"new: {name}")
    print(f"{len(recorded) - len(changed)} of {len(recorded)} recorded files identical"
          + (f", {len(added)} new" if added else ""))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
