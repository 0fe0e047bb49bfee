"""Give a BLT checkpoint written before BLTs recorded the bytes they were trained on
(`seen_bytes`) the record its training would have made, so its n-grams back off on bytes
it never saw. It replays the run's training rows (the generated rows of each epoch up to
the checkpoint's, or the training CSV) from the stored spec; run it where the run was
trained (its train_csv path must resolve). The weights are not changed.

    python scripts/record_seen_bytes.py CHECKPOINT [--out NEW_CHECKPOINT]
"""

from __future__ import annotations

import argparse
import sys

import torch

from bltlab.checkpoint import load_checkpoint, save_checkpoint
from bltlab.errors import BltlabError
from bltlab.inputs import codec_from_state
from bltlab.models import build_model
from bltlab.spec import RunSpec
from bltlab.training import load_rows, rows_of_epoch


def seen_bytes(state: dict) -> torch.Tensor:
    """The bytes of every training row the checkpoint's run stepped on, marked as training
    marks them."""
    spec = RunSpec.from_dict(state["spec"])
    codec = codec_from_state(state["codec"], spec.model.max_len - 1)
    train, _, _ = load_rows(spec)
    model = build_model(spec.model)
    epochs = state["epoch"] if "epoch" in state else state["run_state"]["epoch"]
    for epoch in range(epochs):
        model.see_texts(rows_of_epoch(spec, codec, train, epoch).inputs)
    return model.seen_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", help="where to write (default: over the checkpoint)")
    args = parser.parse_args()
    try:
        state = load_checkpoint(args.checkpoint, "blt")
        state["model"]["seen_bytes"] = seen_bytes(state)
    except BltlabError as e:
        sys.exit(f"error: {e}")
    save_checkpoint(args.out or args.checkpoint, state)
    unseen = [f"{b:02x}" for b in range(256) if not state["model"]["seen_bytes"][b]]
    print(f"{args.out or args.checkpoint}: {256 - len(unseen)} byte values seen in training; "
          f"never: {' '.join(unseen)}")


if __name__ == "__main__":
    main()
