"""`bltlab` that also keeps each epoch's validated weights (the moving average the BLT
recipe keeps) as DIR/epochs/eN/best_<mode>_model.pt, so that a robustness set can be read
after every epoch (log 29). Run from the repository root with src/ on PYTHONPATH:

    python docs/log/29-schedule-unseen/epochs.py --threads 1 train --mode blt --seed S \
        --save_dir DIR --train_csv data/broad/train.csv [FLAGS]
"""

from __future__ import annotations

import sys
from pathlib import Path

from bltlab import cli, training

end_epoch = training.end_epoch


def keep_epoch(run, row, callback):
    """The epoch's usual end, then its validated weights in a checkpoint of their own."""
    end_epoch(run, row, callback)
    folder = Path(run.spec.train.save_dir) / "epochs" / f"e{row['epoch']}"
    folder.mkdir(parents=True, exist_ok=True)
    training.save_checkpoint(folder / f"best_{run.spec.mode}_model.pt",
                             {**training.base_state(run), "model": run.kept.state_dict(),
                              "epoch": row["epoch"], "metrics": row, "run_key": run.key})


if __name__ == "__main__":
    training.end_epoch = keep_epoch
    sys.argv = ["bltlab", *sys.argv[1:]]
    cli.main()
