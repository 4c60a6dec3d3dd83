"""Train the Fashion-MNIST classifier behind the quality yardstick (diffusion_core/quality).

    python -m backends.pytorch.train_classifier [--epochs 4] [--out diffusion_core/quality]

Writes fashion_classifier.safetensors (float32 weights under the names the NumPy forward reads)
and fashion_classifier.json (test accuracy, training settings, the floor of the yardstick).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class FashionClassifier(nn.Module):
    """The network of diffusion_core/quality/classifier.py, in PyTorch for training."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)
        self.dropout = nn.Dropout(0.3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), 1000):
            logits = model(torch.from_numpy(images[i:i + 1000]))
            correct += int((logits.argmax(1).numpy() == labels[i:i + 1000]).sum())
    return correct / len(images)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "diffusion_core" / "quality"))
    args = p.parse_args(argv)

    from safetensors.numpy import save

    from diffusion_core.files import write_atomically

    from diffusion_core.data import DataError, load_fashion_mnist
    from diffusion_core.quality import frechet_distance, kernel_distance, load_classifier
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    try:
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = FashionClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(train) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train))
        for i in range(len(train) // args.batch_size):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            x, y = torch.from_numpy(train.images[idx]), torch.from_numpy(train.labels[idx])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, test.images, test.labels)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, test accuracy {acc:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)

    out = Path(args.out)
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    write_atomically(out / "fashion_classifier.safetensors", save(weights))
    # The yardstick's floor: 500 training images against 500 held-out test images (as the
    # quality benchmark compares 500 samples with the test set), and the full sets.
    clf = load_classifier(out / "fashion_classifier.safetensors")
    f_train, f_test = clf.features(train.images[:10000]), clf.features(test.images)
    pick = np.random.default_rng(1)
    a, b = f_train[pick.choice(10000, 500, replace=False)], f_test[pick.choice(10000, 500, replace=False)]
    info = {
        "test_accuracy": round(acc, 4),
        "numpy_forward_test_accuracy": round(
            float((clf.probabilities(test.images).argmax(1) == test.labels).mean()), 4),
        "train_command": "python -m backends.pytorch.train_classifier " + " ".join(argv or sys.argv[1:]),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "floor_fd_500_train_vs_500_test": round(frechet_distance(a, b), 3),
        "floor_fd_10k_train_vs_10k_test": round(frechet_distance(f_train, f_test), 3),
        "floor_kid_500_train_vs_500_test": round(kernel_distance(a, b, subsets=20)[0], 5),
    }
    write_atomically(out / "fashion_classifier.json", (json.dumps(info, indent=2) + "\n").encode())
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
