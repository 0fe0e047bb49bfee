"""The compute frontier: grid points as run specs, trained to one FLOP budget, summarised."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bltlab import frontier
from bltlab.cli import main
from tests.conftest import CLI, strings, write_reversal

TINY = {"d_model": 16, "nhead": 2, "dim_feedforward": 32, "batch_size": 32,
        "warmup_steps": 5, "val_fraction": 0.1}


@pytest.mark.workers
def test_a_tiny_grid_trains_to_its_budget_and_is_summarised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(frontier.GRIDS, "quick", {"budget": 2e9, "points": {
        "char-tiny": ("char", {**TINY, "num_encoder_layers": 1, "num_decoder_layers": 1}),
        "blt-tiny": ("blt", {**TINY, "patcher": "static", "static_size": 2,
                             "ngram_buckets": 64}),
    }})
    rows = strings(300, 4, 12)
    write_reversal(tmp_path / "data" / "train.csv", rows)
    write_reversal(tmp_path / "data" / "test.csv", strings(60, 9, 12))
    write_reversal(tmp_path / "data" / "final" / "seed" / "test.csv", strings(60, 10, 12))
    assert main(["run", "--frontier", "--workers", "2", "--threads", "1", "--no_progress"]) == 0
    result = json.loads((tmp_path / "results" / "frontier.json").read_text())
    points = {p["name"]: p for p in result["points"]}
    assert set(points) == {"char-tiny", "blt-tiny"}
    for p in points.values():
        flops = [c["train_flops"] for c in p["curve"]]
        per_epoch = flops[-1] / len(flops)
        assert flops == sorted(flops)
        assert 2e9 - 0.2 * per_epoch < flops[-1] < 2e9 + 1.2 * per_epoch  # about the budget
        assert p["inference_flops_per_row"] > 0
    assert set(result["summary"]) == {"char", "blt"}
    assert (tmp_path / "checkpoints" / "frontier" / "blt-tiny" / "seed_0" / "spec.yaml").is_file()
    assert result["table"]["blt-tiny"]["final_exact_match"]["n"] == 1
    assert result["missing"] == {}

    # a point whose worker was stopped mid-run is left out and named, not reported
    history = tmp_path / "checkpoints" / "frontier" / "blt-tiny" / "seed_0" / "history_blt.json"
    cut = json.loads(history.read_text())
    cut.update(finished=False, epochs=cut["epochs"][:1])
    history.write_text(json.dumps(cut))
    assert main(["run", "--frontier", "--skip_train", "--no_progress"]) == 0
    result = json.loads((tmp_path / "results" / "frontier.json").read_text())
    assert [p["name"] for p in result["points"]] == ["char-tiny"]
    assert result["missing"] == {"blt-tiny seed 0": "unfinished (1 epochs trained)"}
    assert "blt-tiny" not in result["table"]

    # nothing finished to report: an error, and the results are left as they were
    kept = (tmp_path / "results" / "frontier.json").read_bytes()
    assert main(["run", "--frontier", "--skip_train", "--save_dir", "none"]) == 2
    assert (tmp_path / "results" / "frontier.json").read_bytes() == kept


def test_summary_reads_the_front_from_seed_means():
    curve = lambda *pts: [{"train_flops": f, "val_exact_match": e, "epoch": i}  # noqa: E731
                          for i, (f, e) in enumerate(pts)]
    points = [
        {"name": "a", "family": "blt", "seed": 0, "curve": curve((1e9, 0.5), (2e9, 0.991),
                                                                  (3e9, 0.9995)),
         "test_exact_match": 0.996, "inference_flops_per_row": 5e6},
        {"name": "a", "family": "blt", "seed": 1, "curve": curve((1e9, 0.5), (4e9, 0.991)),
         "test_exact_match": 0.998, "inference_flops_per_row": 5e6},
        {"name": "b", "family": "blt", "seed": 0, "curve": curve((1e9, 0.992), (2e9, 0.995)),
         "test_exact_match": 0.99, "inference_flops_per_row": 1e6},
        {"name": "c", "family": "char", "seed": 0, "curve": curve((4e9, 0.5)),
         "test_exact_match": 0.2, "inference_flops_per_row": 1e6}]
    s = frontier.summarise(frontier.table(points))
    assert s["blt"]["train_flops_to_0.99"] == {"flops": 1e9, "point": "b", "seeds": 1}
    # a reaches 99.9% on one seed of two: not counted as reaching it
    assert s["blt"]["train_flops_to_0.999"] is None
    cheapest = s["blt"]["cheapest_inference_at_test_target"]
    assert cheapest["point"] == "a" and cheapest["test_exact_match"] == pytest.approx(0.997)
    assert s["char"]["train_flops_to_0.99"] is None
    assert s["char"]["cheapest_inference_at_test_target"] is None


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.workers
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_signal_to_the_grid_reaches_its_workers(tmp_path, how):
    """Ctrl-C (SIGINT) to `run --frontier` stops its workers at once; a parent killed
    outright takes its workers with it: none trains on, holding the point's lock."""
    write_reversal(tmp_path / "data" / "train.csv", strings(400, 0, 12))
    write_reversal(tmp_path / "data" / "test.csv", strings(20, 1, 12))
    parent = subprocess.Popen([*CLI, "--threads", "1", "run", "--frontier", "--points",
                               "char-d32", "--no_progress"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (workers := children(parent.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert workers, "no worker started"
        time.sleep(0.5)  # the worker is starting or training
        parent.send_signal(how)
        parent.wait(30)
        deadline = time.monotonic() + 30
        while not all(map(gone, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(map(gone, workers))
    finally:
        parent.kill()
        for pid in children(parent.pid):
            os.kill(pid, signal.SIGKILL)


def test_unknown_points_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_reversal(tmp_path / "data" / "train.csv", strings(50, 0, 8))
    write_reversal(tmp_path / "data" / "test.csv", strings(10, 1, 8))
    assert main(["run", "--frontier", "--points", "nope"]) == 2
    assert "--points nope: not in the quick grid" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_grid_points_are_valid_specs(tmp_path, preset):
    specs = frontier.point_specs(preset, tmp_path / "t.csv", tmp_path, [0, 1], "cpu")
    assert len(specs) == 2 * len(frontier.GRIDS[preset]["points"])
    assert all(s.train.flops_budget == frontier.GRIDS[preset]["budget"] for s in specs.values())
    assert {s.mode for s in specs.values()} == {"char", "blt"}
