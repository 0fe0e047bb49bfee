"""A tiny model really learns reversal; training and evaluation run end to end."""

import json
import random

from bltlab.cli import main
from bltlab.data import write_pairs
from bltlab.decoding import predict
from bltlab.models import BLTConfig, ModelConfig
from bltlab.patching import PatcherConfig
from bltlab.training import TrainConfig, load_model, train


def strings(n, seed, longest=16):
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefgh éz") for _ in range(rng.randint(4, longest)))
            for _ in range(n)]


def test_tiny_model_learns_reversal(tmp_path):
    inputs = strings(8000, 0)
    write_pairs(tmp_path / "train.csv", inputs, [s[::-1] for s in inputs])
    model_cfg = ModelConfig(d_model=48, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                            dim_feedforward=96, max_len=32, pos_encoding="rope")
    cfg = TrainConfig(train_csv=str(tmp_path / "train.csv"), save_dir=str(tmp_path / "ck"),
                      epochs=5, batch_size=32, lr=3e-3, warmup_steps=20, progress=False)
    result = train("char", model_cfg, cfg)
    model, codec, state = load_model(result["best_checkpoint"], "char")
    held_out = [s for s in strings(300, 1) if s not in set(inputs)]
    preds = predict(model, codec, held_out)
    accuracy = sum(p == s[::-1] for p, s in zip(preds, held_out)) / len(held_out)
    assert accuracy >= 0.95, accuracy
    history = json.loads((tmp_path / "ck" / "history_char.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, 6))
    assert history["epochs"][-1]["train_loss"] < history["epochs"][0]["train_loss"]
    assert state["train_config"]["epochs"] == 5

    write_pairs(tmp_path / "test.csv", held_out, [s[::-1] for s in held_out])
    out = tmp_path / "preds" / "p.csv"
    assert main(["eval", "--checkpoint", result["best_checkpoint"], "--test_csv",
                 str(tmp_path / "test.csv"), "--output_csv", str(out)]) == 0
    metrics = json.loads((tmp_path / "preds" / "p_metrics.json").read_text())
    assert metrics["exact_match_accuracy"] == accuracy
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
