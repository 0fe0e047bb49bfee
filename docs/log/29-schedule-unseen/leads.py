"""How a BLT writes the unseen script's Cyrillic lead bytes (0xD0-0xD3), log 29: over rows
whose prediction has the target's byte length, each lead byte's target -> written counts,
and the two bytes of each wrong character. One JSON line per predictions CSV (`bltlab
eval --output_csv`'s):

    python docs/log/29-schedule-unseen/leads.py NAME=PREDICTIONS_CSV...
"""

from __future__ import annotations

import collections
import csv
import json
import sys


def leads(path: str) -> dict:
    lead: collections.Counter = collections.Counter()
    wrong: collections.Counter = collections.Counter()
    rows = 0
    with open(path, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            t, p = r["target"].encode(), r["prediction"].encode()
            if len(t) != len(p):
                continue
            rows += 1
            for i, (a, b) in enumerate(zip(t, p)):
                if 0xD0 <= a <= 0xD3:
                    lead[f"{a:02x}->{b:02x}"] += 1
                    if a != b:
                        wrong[f"{t[i:i + 2].hex()}->{p[i:i + 2].hex()}"] += 1
    return {"predictions": path, "rows_of_equal_length": rows,
            "lead_bytes": dict(lead.most_common()), "wrong_characters": dict(wrong.most_common(8))}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        print(json.dumps({"name": name, **leads(path)}))
