"""The compute frontier: grid points as run specs, trained to one FLOP budget, summarised."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bltlab import cluster, frontier
from bltlab.cli import main
from tests.conftest import CLI, strings, write_reversal

TINY = {"d_model": 16, "nhead": 2, "dim_feedforward": 32, "max_tokens": 256,
        "warmup_steps": 5, "val_fraction": 0.1}


@pytest.mark.workers
def test_a_tiny_grid_sweeps_trains_to_its_budget_and_answers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(frontier.GRIDS, "seed", {"quick": {
        "budget": 2e9, "reference": {"char": "char-tiny", "blt": "blt-tiny"}, "points": {
            "char-tiny": ("char", {**TINY, "num_encoder_layers": 1, "num_decoder_layers": 1}),
            "char-small": ("char", {**TINY, "d_model": 8, "num_encoder_layers": 1,
                                    "num_decoder_layers": 1}),
            "blt-tiny": ("blt", {**TINY, "patcher": "static", "static_size": 2,
                                 "ngram_buckets": 64})}}})
    monkeypatch.setattr(frontier, "SWEEP_LRS", (3e-3,))
    write_reversal(tmp_path / "data" / "train.csv", strings(300, 4, 12))
    write_reversal(tmp_path / "data" / "test.csv", strings(60, 9, 12))
    write_reversal(tmp_path / "data" / "final" / "seed" / "test.csv", strings(60, 10, 12))
    assert main(["run", "--frontier", "--profile", "seed", "--workers", "2", "--threads", "1",
                 "--no_progress"]) == 0
    result = json.loads((tmp_path / "results" / "frontier_seed.json").read_text())
    assert result["learning_rates"] == {"char": 3e-3, "blt": 3e-3}  # from the sweep
    points = {p["name"]: p for p in result["points"]}
    assert set(points) == {"char-tiny", "char-small", "blt-tiny"}
    for p in points.values():
        flops = [c["train_flops"] for c in p["curve"]]
        assert flops == sorted(flops)
        assert 2e9 <= flops[-1] < 2e9 * 1.05  # the budget, hit within a step: mid-epoch
        assert p["inference_flops_per_row"] > 0 and p["lr"] == 3e-3
        assert set(p["inference_flops_by_part"]) >= {"head", "total"}
    blt_run = tmp_path / "checkpoints" / "frontier" / "seed" / "sweep" / "blt-tiny-lr0.003"
    assert (blt_run / "seed_0" / "spec_blt.yaml").is_file()  # the reference: the sweep's run
    assert not (tmp_path / "checkpoints" / "frontier" / "seed" / "blt-tiny").exists()
    assert result["table"]["blt-tiny"]["final_exact_match"]["n"] == 1
    assert result["missing"] == {}
    answer = json.loads((tmp_path / "results" / "answer.json").read_text())
    seed = answer["profiles"]["seed"]
    assert set(seed["families"]) == {"char", "blt"} and "verdict" in answer
    assert {"cheapest_passing", "cheapest_failing", "located",
            "flops_at_matched_accuracy"} <= set(seed["families"]["char"])

    # each run's record (history, scores, final-set outcomes) outlives its checkpoints:
    # the grid resumes from the records alone, training nothing again
    records = tmp_path / "results" / "runs" / "seed"
    assert sorted(p.relative_to(records).as_posix() for p in records.rglob("*.json")) == [
        "char-small/seed_0.json", "sweep/blt-tiny-lr0.003/seed_0.json",
        "sweep/char-tiny-lr0.003/seed_0.json"]
    shutil.rmtree(tmp_path / "checkpoints")
    shutil.rmtree(tmp_path / "predictions")
    assert main(["run", "--frontier", "--profile", "seed", "--workers", "2", "--threads", "1",
                 "--no_progress"]) == 0
    assert not list(tmp_path.rglob("*.pt"))
    again = json.loads((tmp_path / "results" / "frontier_seed.json").read_text())
    assert again["points"] == result["points"] and again["table"] == result["table"]
    assert json.loads((tmp_path / "results" / "answer.json").read_text()) == answer

    # a point whose worker was stopped mid-run (no record) is left out and named
    small = json.loads((records / "char-small" / "seed_0.json").read_text())
    (records / "char-small" / "seed_0.json").unlink()
    history = (tmp_path / "checkpoints" / "frontier" / "seed" / "char-small" / "seed_0" /
               "history_char.json")
    history.parent.mkdir(parents=True)
    history.write_text(json.dumps({**small["history"], "finished": False,
                                   "epochs": small["history"]["epochs"][:1]}))
    assert main(["run", "--frontier", "--profile", "seed", "--skip_train",
                 "--no_progress"]) == 0
    result = json.loads((tmp_path / "results" / "frontier_seed.json").read_text())
    assert [p["name"] for p in result["points"]] == ["char-tiny", "blt-tiny"]
    assert result["missing"] == {"char-small seed 0": "unfinished (1 epochs trained)"}
    assert "char-small" not in result["table"]

    # nothing finished to report: an error, and the results are left as they were
    kept = (tmp_path / "results" / "frontier_seed.json").read_bytes()
    assert main(["run", "--frontier", "--profile", "seed", "--skip_train", "--save_dir",
                 "none", "--records_dir", "none"]) == 2
    assert (tmp_path / "results" / "frontier_seed.json").read_bytes() == kept


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


def test_after_a_signal_queued_runs_start_no_worker(tmp_path):
    workers = cluster.Workers()
    workers.signal(signal.SIGINT)
    marker = tmp_path / "started"
    with open(tmp_path / "log", "w") as log:
        code = workers.run(["touch", str(marker)], log)
    assert code != 0 and not marker.exists() and not workers.live


@pytest.mark.workers
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_signal_to_the_grid_reaches_its_workers(tmp_path, how):
    """Ctrl-C (SIGINT) to `run --frontier` stops its workers at once; a parent killed
    outright takes its workers with it: none trains on, holding the point's lock."""
    write_reversal(tmp_path / "data" / "train.csv", strings(400, 0, 12))
    write_reversal(tmp_path / "data" / "test.csv", strings(20, 1, 12))
    parent = subprocess.Popen([*CLI, "--threads", "1", "run", "--frontier", "--profile",
                               "seed", "--no_progress"], cwd=tmp_path,
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
    assert main(["run", "--frontier", "--profile", "seed", "--points", "nope"]) == 2
    assert "--points nope: not in the seed quick grid" in capsys.readouterr().err


@pytest.mark.parametrize("profile", ["seed", "broad"])
@pytest.mark.parametrize("preset", ["quick", "full"])
def test_grid_points_and_sweeps_are_valid_specs(tmp_path, profile, preset):
    grid = frontier.GRIDS[profile][preset]
    specs = frontier.point_specs(profile, preset, tmp_path / "t.csv", tmp_path, [0, 1], "cpu",
                                 {"char": 1e-3, "byte": 2e-3, "blt": 4e-3})
    assert len(specs) == 2 * len(grid["points"])
    assert all(s.train.flops_budget == grid["budget"] and s.data.profile == profile
               and s.data.val_fraction == 0.1 for s in specs.values())
    # as the grids were trained: no weight average, no label smoothing
    assert all(s.train.ema_decay == 0.0 and s.train.label_smoothing == 0.0
               for s in specs.values())
    assert {(s.mode, s.train.lr) for s in specs.values()} == {
        ("char", 1e-3), ("byte", 2e-3), ("blt", 4e-3)}
    sweep = frontier.sweep_specs(profile, preset, tmp_path / "t.csv", tmp_path, "cpu")
    assert len(sweep) == 3 * len(frontier.SWEEP_LRS)
    for family, name in grid["reference"].items():  # seed 0 of a reference: its sweep run
        assert specs[name, 0] == sweep[family, specs[name, 0].train.lr]
        assert specs[name, 1].train.save_dir == str(tmp_path / name / "seed_1")
    assert set(grid["reference"]) == {"char", "byte", "blt"}
    assert all(grid["points"][name][0] == family for family, name in grid["reference"].items())


@pytest.mark.workers
def test_points_run_as_cluster_jobs_through_submitits_local_executor(tmp_path, monkeypatch):
    """The same run spec, trained as a submitit job (what SLURM would run), lands in the
    point's folder, where the frontier reads it."""
    monkeypatch.chdir(tmp_path)
    train_csv = write_reversal(tmp_path / "train.csv", strings(200, 4, 10))
    spec = frontier.spec_of("char", {**TINY, "num_encoder_layers": 1, "num_decoder_layers": 1},
                            "seed", 5e8, Path(train_csv),
                            tmp_path / "checkpoints" / "frontier" / "seed" / "char-tiny", 0,
                            "cpu")
    frontier.train_points({("char-tiny", 0): spec}, frontier.Executor(
        "submitit-local", folder=tmp_path / "checkpoints" / "frontier" / "jobs"))
    assert frontier.finished(spec) is None
    assert list((tmp_path / "checkpoints" / "frontier" / "jobs").glob("*_log.out"))


def test_each_run_is_followed_at_once_with_the_threads_it_freed(monkeypatch):
    """train_points(..., then): a run's follow-up (bltlab run: its evaluation) starts as
    soon as it ends, with the cores of the runs that ended, while the others train."""
    import sys

    def sleeper(seconds, threads, workers):
        assert threads == 1  # 2 cores, 2 workers
        assert workers.run([sys.executable, "-c", f"import time; time.sleep({seconds})"],
                           None) == 0
        return f"sleep {seconds}"

    monkeypatch.setattr(cluster, "run_here", sleeper)
    torch.set_num_threads(2)
    seen = []
    cluster.train_points({"short": 0.1, "long": 3.0}, 2,
                         lambda key, threads: seen.append((key, threads, time.monotonic())))
    assert [(k, t) for k, t, _ in seen] == [("short", 1), ("long", 2)]
    assert seen[1][2] - seen[0][2] > 1.5  # the first, long before the other ended


def test_a_record_holds_for_its_spec_and_training_file_only(tmp_path, capsys):
    train_csv = write_reversal(tmp_path / "train.csv", strings(50, 4, 10))
    home = tmp_path / "checkpoints" / "frontier" / "seed"
    spec = frontier.spec_of("char", TINY, "seed", 1e9, Path(train_csv), home / "p", 0, "cpu")
    records = frontier.Records(tmp_path / "runs" / "seed", home)
    records.write(spec, {"history": {"epochs": []}})
    assert records.path(spec) == tmp_path / "runs" / "seed" / "p" / "seed_0.json"
    assert records.read(spec)["history"] == {"epochs": []}
    moved = frontier.spec_of("char", TINY, "seed", 1e9, Path(train_csv),
                             tmp_path / "elsewhere" / "p", 0, "cpu")
    assert frontier.Records(records.folder, tmp_path / "elsewhere").read(moved) is not None
    other = frontier.spec_of("char", {**TINY, "lr": 1e-2}, "seed", 1e9, Path(train_csv),
                             home / "p", 0, "cpu")
    assert records.read(other) is None
    path, record = records.path(spec), json.loads(records.path(spec).read_text())
    del record["spec"]["train"]["grad_clip"]  # written before the setting existed: its default
    path.write_text(json.dumps(record))
    assert records.read(spec) is not None
    record["spec"]["train"]["gone"] = 1  # a setting since removed: another run
    path.write_text(json.dumps(record))
    assert records.read(spec) is None
    del record["spec"]["train"]["gone"]
    path.write_text(json.dumps(record))
    write_reversal(tmp_path / "train.csv", strings(50, 4, 11))  # other training rows
    assert records.read(spec) is None
    assert "records another run" in capsys.readouterr().out


def test_later_seeds_go_to_the_points_near_each_front(monkeypatch):
    """--near_front 2: within 2x the inference FLOPs of the family's cheapest point that
    passes on validation (the mean of its seeds), nothing from a family with no pass; a
    front its later seeds move brings in the points near its new place."""
    from types import SimpleNamespace

    points = {"char-a": ("char", 1e6, 0.90), "char-b": ("char", 3e6, 0.999),
              "char-c": ("char", 5e6, 1.0), "char-d": ("char", 7e6, 1.0),
              "blt-a": ("blt", 2e6, 0.5), "blt-b": ("blt", 4e6, 0.9)}
    later_val = {"char-b": 0.98}  # char-b's seeds 1 and 2 fail: its mean fails
    trained: set = set()

    def spec(name, seed):
        return SimpleNamespace(mode=points[name][0], name=name, seed=seed)

    first = {(n, 0): spec(n, 0) for n in points}
    later = {(n, s): spec(n, s) for n in points for s in (1, 2)}
    monkeypatch.setattr(frontier, "finished", lambda spec, records: None if (
        spec.seed == 0 or (spec.name, spec.seed) in trained) else "not trained")
    monkeypatch.setattr(frontier, "evaluate_point", lambda name, *a: {
        "test": {"inference_flops_per_row": {"total": points[name][1]}}})
    monkeypatch.setattr(frontier, "curve", lambda spec, records: [{"val_exact_match": (
        points[spec.name][2] if spec.seed == 0 else later_val.get(spec.name, 1.0))}])
    assert frontier.near_front(first, "t.csv", "cpu", False, 2.0, None) == {"char-b", "char-c"}
    rounds = []

    def train(runs):
        rounds.append(sorted({k[0] for k in runs}))
        trained.update(runs)

    got = frontier.later_seeds(first, later, "t.csv", "cpu", False, 2.0, None, train)
    assert rounds == [["char-b", "char-c"], ["char-d"]]  # char-c became the front
    assert sorted(got) == [(n, s) for n in ("char-b", "char-c", "char-d") for s in (1, 2)]


def test_a_run_another_process_is_training_is_left_to_it(tmp_path, monkeypatch, capsys):
    """Two `bltlab run --frontier` on one folder share the work: a run whose lock a live
    process holds is not started again; a lock left by a killed run is no obstacle."""
    from bltlab.fileio import RunLock

    train_csv = write_reversal(tmp_path / "train.csv", strings(50, 4, 10))
    home = tmp_path / "checkpoints" / "frontier" / "seed"
    specs = {(p, 0): frontier.spec_of("char", TINY, "seed", 1e9, Path(train_csv), home / p, 0,
                                      "cpu") for p in ("busy", "free", "stale")}
    records = frontier.Records(tmp_path / "runs" / "seed", home)
    (home / "stale" / "seed_0").mkdir(parents=True)
    (home / "stale" / "seed_0" / ".char.lock").write_text(  # its owner is gone
        f"{socket.gethostname()} 999999999\n")
    started = []
    monkeypatch.setattr(cluster, "run_here", lambda spec, *a: started.append(
        Path(spec.train.save_dir).parent.name) or "")
    with RunLock(home / "busy" / "seed_0", "char"):
        frontier.train_missing(specs, 1, lambda *a: None, records)
    assert started == ["free", "stale"]
    assert "busy/seed_0 is training in another process" in capsys.readouterr().out
