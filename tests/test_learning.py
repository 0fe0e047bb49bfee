"""A tiny model really learns reversal; training and evaluation run end to end."""

import json

import pytest
import torch
from torch.utils.data import DataLoader

from bltlab.batching import EncodedPairs, LengthBucketSampler, as_is
from bltlab.checkpoint import load_model
from bltlab.cli import main
from bltlab.decoding import predict
from bltlab.report import analyze
from bltlab.training import validation_scores
from tests.conftest import strings, write_reversal


def accuracy(preds, texts):
    return sum(p == s[::-1] for p, s in zip(preds, texts)) / len(texts)


def test_tiny_model_learns_reversal(tiny_char_run):
    tmp_path, result, inputs = tiny_char_run
    model, codec, _ = load_model(result["best_checkpoint"], "char")
    held_out = [s for s in strings(300, 1) if s not in set(inputs)]
    greedy = accuracy(predict(model, codec, held_out), held_out)
    assert greedy >= 0.95, greedy
    history = json.loads((tmp_path / "ck" / "history_char.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, 5))
    assert history["epochs"][-1]["train_loss"] < history["epochs"][0]["train_loss"] / 5
    assert history["epochs"][-1]["val_loss"] < history["epochs"][0]["val_loss"]
    assert accuracy(predict(model, codec, held_out, beam_width=3), held_out) >= greedy - 0.01
    runs = ["aaaa", "hhhhhh", "zzzzzzzz", "ééééé", "abbbb"]  # counted, not stopped on content
    assert predict(model, codec, runs) == [s[::-1] for s in runs]


def test_tiny_blt_learns_reversal(tiny_blt_run):
    """Bytes, 2-byte patches, patch-level decoder memory; non-ASCII é in the alphabet."""
    _, result, inputs = tiny_blt_run
    model, codec, state = load_model(result["best_checkpoint"], "blt")
    held_out = [s for s in strings(300, 1, 12) if s not in set(inputs)]
    assert accuracy(predict(model, codec, held_out), held_out) >= 0.9
    assert state["spec"]["model"]["patch_slots"] == 4 + 3  # max_patch_len + a UTF-8 tail


def test_validation_exact_match_is_what_greedy_decoding_gets(tiny_char_run, tiny_blt_run):
    """One teacher-forced pass scores the same rows right as greedy decoding does."""
    for mode, run in (("char", tiny_char_run), ("blt", tiny_blt_run)):
        model, codec, _ = load_model(run[1]["best_checkpoint"], mode)
        rows = [s for s in strings(300, 5, 30) if not codec.too_long(s)]  # some longer than trained
        greedy = accuracy(predict(model, codec, rows), rows)
        data = EncodedPairs.build(codec, rows, [s[::-1] for s in rows])
        loader = DataLoader(data, collate_fn=as_is,
                            batch_sampler=LengthBucketSampler(data.lengths(), 32))
        _, exact = validation_scores(model, loader, torch.device("cpu"))
        assert 0 < greedy < 1 and exact == pytest.approx(greedy), (mode, greedy, exact)


def test_evaluate_writes_what_analyze_reads(tiny_char_run, tiny_blt_run, tmp_path):
    """Both models evaluated by the CLI on the same rows; the report reads those files."""
    rows = [s for s in strings(120, 2, 12) if len(s) <= 12]
    test_csv = write_reversal(tmp_path / "test.csv", rows)
    for mode, run in (("char", tiny_char_run), ("blt", tiny_blt_run)):
        name = "baseline" if mode == "char" else "blt"
        assert main(["eval", "--mode", mode, "--checkpoint", run[1]["best_checkpoint"],
                     "--test_csv", test_csv, "--output_csv",
                     str(tmp_path / "predictions" / f"predictions_{name}.csv")]) == 0
    metrics = json.loads((tmp_path / "predictions" / "predictions_blt_metrics.json").read_text())
    results = analyze(tmp_path / "results", tmp_path / "predictions", tmp_path / "none",
                      plots=False)
    assert results["models"]["blt"]["exact_match"] == metrics["exact_match_accuracy"]
    assert 0.9 * len(rows) < results["comparison"]["rows"] <= len(rows)  # held out from both
    assert (tmp_path / "predictions" / "predictions_baseline.csv").read_text(
        encoding="utf-8").startswith("input,target,prediction,correct,in_training\n")


def test_eval_without_a_test_csv_uses_the_checkpoints_profiles_test_set(
        tiny_char_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tiny model's profile is broad: data/broad/test.csv
    write_reversal(tmp_path / "data" / "broad" / "test.csv", strings(20, 3, 12))
    assert main(["eval", "--mode", "char", "--checkpoint",
                 str(tiny_char_run[1]["best_checkpoint"]), "--output_csv", "p.csv"]) == 0
    metrics = json.loads((tmp_path / "p_metrics.json").read_text())
    assert metrics["test_csv"] == "data/broad/test.csv" and metrics["total_samples"] == 20


def test_a_tiny_byte_model_learns_reversal_and_round_trips(tmp_path):
    """The byte baseline: the char model's network over UTF-8 bytes (é is two of them)."""
    from bltlab.spec import RunSpec
    from bltlab.training import train

    inputs = strings(4000, 0, 12)
    spec = RunSpec.of("byte", d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                      dim_feedforward=64, max_len=32, start_token=True, fresh_pairs=False,
                      train_csv=write_reversal(tmp_path / "train.csv", inputs),
                      save_dir=str(tmp_path / "ck"), epochs=4, batch_size=32, lr=4e-3,
                      warmup_steps=20, progress_bars=False, tensorboard=False)
    result = train(spec)
    model, codec, state = load_model(result["best_checkpoint"], "byte")
    assert codec.mode == "byte" and state["spec"]["model"]["vocab_size"] == 260
    assert codec.batch(["é"])["src_lens"].tolist() == [3]  # BOS and two bytes
    held_out = [s for s in strings(300, 1, 12) if s not in set(inputs)]
    assert accuracy(predict(model, codec, held_out), held_out) >= 0.9
