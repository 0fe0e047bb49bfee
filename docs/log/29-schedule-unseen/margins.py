"""Per-bit margins of a BLT's output on the unseen script (log 29). Teacher-forced on the
set's rows, at every target byte that is a Cyrillic lead byte (0xD0-0xD3) and at the
continuation byte after it: the output layer scores byte b as h . E[b], with E[b] = its
UTF-8 role's vector + sum_i s_i(b) w_i (s_i = +-1, bit i), so within a role each bit is
decided on its own by the sign of h . w_i. The margin s_i(target) (h . w_i) is below zero
where bit i would be written wrong. Prints one JSON line per checkpoint: the mean margin
and the share wrong of each bit a role leaves free (lead: bits 0-4, continuation: 0-5).

    python docs/log/29-schedule-unseen/margins.py CHECKPOINT...
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from bltlab.checkpoint import load_model
from bltlab.data import load_pairs
from bltlab.decoding import BOS, EOS, PAD
from bltlab.layers import fixed_weights

ROWS = "data/robustness/unseen_script.csv"
FREE_BITS = {"lead": 5, "cont": 6}


def margins(path: str, inputs: list[str], targets: list[str], size: int = 50) -> dict:
    model, codec, _ = load_model(path, "blt")
    table = model.embeddings.tokens
    specials = table.specials.num_embeddings
    found: dict[str, list] = {"lead": [], "cont": []}
    with torch.no_grad(), fixed_weights(model):
        for lo in range(0, len(inputs), size):
            rows = np.arange(min(size, len(inputs) - lo))
            batch = codec.batch(inputs[lo:lo + size])
            out = codec.target_ids(targets[lo:lo + size]).framed(last=EOS).padded(rows, PAD)
            tgt_in = torch.cat([torch.full_like(out[:, :1], BOS), out[:, :-1]], 1)
            memory = model.encode(batch)
            h = model.decoder(tgt_in.masked_fill(tgt_in == EOS, PAD), memory.states,
                              memory.mask, memory.rot)
            byte = (out - specials).clamp(0, 255)
            signs = 2.0 * ((byte[..., None] >> torch.arange(8)) & 1).float() - 1.0
            m = signs * (h @ table.bits.weight)
            lead = (out - specials >= 0xD0) & (out - specials <= 0xD3)
            cont = torch.zeros_like(lead)
            cont[:, 1:] = lead[:, :-1]
            found["lead"].append(m[lead])
            found["cont"].append(m[cont])
    result = {"checkpoint": path}
    for kind, free in FREE_BITS.items():
        v = torch.cat(found[kind])[:, :free]
        result[kind] = {"bytes": len(v), "mean_margin": [round(x, 2) for x in v.mean(0).tolist()],
                        "wrong_pct": [round(100 * x, 1) for x in (v < 0).float().mean(0).tolist()]}
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    pairs = load_pairs(ROWS)
    for checkpoint in sys.argv[1:]:
        print(json.dumps(margins(checkpoint, list(pairs.inputs), list(pairs.targets))))
