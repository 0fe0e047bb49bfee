"""A tiny model really learns reversal; training and evaluation run end to end."""

import json

from bltlab.cli import main
from bltlab.data import write_pairs
from bltlab.decoding import predict
from bltlab.models import BLTConfig
from bltlab.patching import PatcherConfig
from bltlab.training import TrainConfig, load_model, train
from tests.conftest import strings


def test_tiny_model_learns_reversal(tiny_char_run):
    tmp_path, result, inputs = tiny_char_run
    model, codec, state = load_model(result["best_checkpoint"], "char")
    held_out = [s for s in strings(300, 1) if s not in set(inputs)]
    preds = predict(model, codec, held_out)
    accuracy = sum(p == s[::-1] for p, s in zip(preds, held_out)) / len(held_out)
    assert accuracy >= 0.95, accuracy
    history = json.loads((tmp_path / "ck" / "history_char.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, 6))
    assert history["epochs"][-1]["train_loss"] < history["epochs"][0]["train_loss"]
    assert state["train_config"]["epochs"] == 5

    beam = predict(model, codec, held_out, beam_width=3)
    assert sum(p == s[::-1] for p, s in zip(beam, held_out)) / len(held_out) >= accuracy - 0.01

    write_pairs(tmp_path / "test.csv", held_out, [s[::-1] for s in held_out])
    out = tmp_path / "preds" / "p.csv"
    assert main(["eval", "--checkpoint", result["best_checkpoint"], "--test_csv",
                 str(tmp_path / "test.csv"), "--output_csv", str(out)]) == 0
    metrics = json.loads((tmp_path / "preds" / "p_metrics.json").read_text())
    assert metrics["exact_match_accuracy"] == accuracy and metrics["beam_width"] == 1
    assert out.read_text(encoding="utf-8").startswith("input,target,prediction,correct\n")


def test_tiny_blt_learns_reversal(tmp_path):
    """Bytes, 2-byte patches, patch-level decoder memory; non-ASCII é in the alphabet."""
    inputs = strings(6000, 0, 12)
    write_pairs(tmp_path / "train.csv", inputs, [s[::-1] for s in inputs])
    model_cfg = BLTConfig(d_model=48, nhead=2, dim_feedforward=96, max_len=32,
                          ngram_buckets=256)
    cfg = TrainConfig(train_csv=str(tmp_path / "train.csv"), save_dir=str(tmp_path / "ck"),
                      epochs=8, batch_size=32, lr=3e-3, warmup_steps=20, progress=False)
    result = train("blt", model_cfg, cfg, PatcherConfig("static", static_size=2,
                                                        max_patch_len=4))
    model, codec, _ = load_model(result["best_checkpoint"], "blt")
    held_out = [s for s in strings(300, 1, 12) if s not in set(inputs)]
    preds = predict(model, codec, held_out)
    accuracy = sum(p == s[::-1] for p, s in zip(preds, held_out)) / len(held_out)
    assert accuracy >= 0.9, accuracy
    assert (tmp_path / "ck" / "best_blt_model.pt").is_file()
