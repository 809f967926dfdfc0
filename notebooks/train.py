"""A small training script: logistic regression on a synthetic two-moons-like set.

Standard library only, so it runs on any target with Python 3. It prints its
progress, logs metrics with the tracking API and writes the model to outputs/.

    python train.py --epochs 5 --lr 0.5          # by hand: metrics are printed
    jupyter-compute submit train.py -- --epochs 5  # as a run: metrics are recorded
"""

import argparse
import json
import math
import os
import random

from jupyter_compute.tracking import get_run


def make_data(n, seed):
    rng = random.Random(seed)
    points = []
    for _ in range(n):
        label = rng.random() < 0.5
        cx = 1.0 if label else -1.0
        points.append(((cx + rng.gauss(0, 0.8), rng.gauss(0, 0.8)), int(label)))
    return points


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    run = get_run()
    run.tag("model", "logistic-regression")
    data = make_data(400, args.seed)
    w = [0.0, 0.0]
    b = 0.0
    for epoch in range(1, args.epochs + 1):
        loss = correct = 0.0
        for (x1, x2), y in data:
            p = 1 / (1 + math.exp(-(w[0] * x1 + w[1] * x2 + b)))
            loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
            correct += (p > 0.5) == y
            grad = p - y
            w[0] -= args.lr * grad * x1 / len(data)
            w[1] -= args.lr * grad * x2 / len(data)
            b -= args.lr * grad / len(data)
        loss /= len(data)
        accuracy = correct / len(data)
        print(f"epoch {epoch}/{args.epochs}  loss {loss:.4f}  accuracy {accuracy:.3f}")
        run.log("loss", loss, step=epoch)
        run.log("accuracy", accuracy, step=epoch)
        run.log_row("epochs", step=epoch, loss=round(loss, 4), accuracy=accuracy)

    with open(os.path.join(run.outputs_dir, "model.json"), "w") as f:
        json.dump({"w": w, "b": b, "lr": args.lr, "epochs": args.epochs}, f)
    print("saved outputs/model.json")


if __name__ == "__main__":
    main()
