"""The training function the platform runs on every Ray Train worker.

    aip tasks submit --entry digits_mlp.train:train_loop --working-dir examples/digits-mlp \
        --dataset mnist --param epochs=2 --watch

Everything platform-specific goes through ``aiplatform.sdk``: this worker's batches, per-epoch
reports with a checkpoint (resumed after a worker failure), and publishing the model (exported
to ONNX and checked against PyTorch by the platform).
"""

from __future__ import annotations

from typing import Any

import ray.train.torch
import torch
import torch.nn.functional as F

from aiplatform import sdk
from digits_mlp.model import DigitsMLP


def train_loop(config: dict[str, Any]) -> None:
    torch.manual_seed(int(config.get("seed", 0)))
    torch.set_num_threads(int(config.get("threads", 1)))
    run = sdk.context()
    height, width, channels = run.image_shape
    net = DigitsMLP(height * width * channels, int(config.get("hidden", 128)), len(run.labels))
    optimizer = torch.optim.Adam(net.parameters(), lr=float(config.get("lr", 1e-3)))
    first_epoch = 0
    state = sdk.load_checkpoint()
    if state is not None:  # a restarted worker group continues where the last report left it
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = int(state["epoch"])
    model = ray.train.torch.prepare_model(net)  # DistributedDataParallel when there are several workers
    batch_size = int(config.get("batch_size", 128))
    for epoch in range(first_epoch, int(config.get("epochs", 2))):
        model.train()
        seen, loss_sum = 0, 0.0
        for images, labels in sdk.batches("train", batch_size=batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            seen += len(labels)
            loss_sum += float(loss) * len(labels)
        model.eval()
        correct, total, val_loss = 0, 0, 0.0
        with torch.no_grad():
            for images, labels in sdk.batches("val", batch_size=1024):
                logits = model(images)
                val_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(1) == labels).sum())
                total += len(labels)
        sdk.report(
            {
                "train_loss": loss_sum / max(1, seen),
                "val_loss": val_loss / max(1, total),
                "val_accuracy": correct / max(1, total),
                "epochs": int(config.get("epochs", 2)),
            },
            epoch=epoch + 1,
            checkpoint={"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1},
        )
    example = next(iter(sdk.batches("val", batch_size=8)))[0]
    sdk.publish(net, kind="image", labels=run.labels, example_input=example)
