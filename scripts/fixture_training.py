"""What the fixture scripts (train_charcnn.py, train_cifar.py) share: the training loop and the export.

Adam with a step schedule (full rate for ~60 % of the epochs, then /3, then /10), seeded shuffles and
augmentation, and the test accuracy after every epoch. Each script brings its own input scaling
(`to_input`) and augmentation (`augment(batch, generator)`).
"""
import json
import os
import time

import torch
import torch.nn.functional as F


@torch.no_grad()
def add_training_arguments(ap, repo_root, epochs, lr, total_images):
    """The flags every fixture script shares: where to write, and how long and fast to train."""
    ap.add_argument("--out", default=os.path.join(repo_root, "fixtures"),
                    help="fixtures directory to write (default: <repo>/fixtures)")
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--train-subset", type=int, default=0,
                    help=f"train on only this many training images (0 = all {total_images})")
    ap.add_argument("--threads", type=int, default=2)


def accuracy(model, to_input, u8, labels, batch=1000):
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        logits = model(to_input(u8[i : i + batch]))
        correct += (logits.argmax(1).numpy() == labels[i : i + batch]).sum()
    return correct / len(labels)


def train(model, to_input, augment, seed, x_train, y_train, x_test, y_test, epochs, batch_size, lr, report_every=50):
    """Trains in place; returns the seconds it took."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    m1 = max(1, round(epochs * 0.6))
    m2 = max(m1 + 1, round(epochs * 0.85))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[m1, m2], gamma=0.3)
    x_all = to_input(x_train)
    y_all = torch.from_numpy(y_train)
    n = len(y_all)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total_loss = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb = augment(x_all[idx], gen)
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), y_all[idx])
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
            if (i // batch_size) % report_every == report_every - 1:
                print(f"  {i + len(idx)}/{n} images  {time.time() - t0:.0f} s", flush=True)
        sched.step()
        acc = accuracy(model, to_input, x_test, y_test)
        print(
            f"epoch {epoch + 1}/{epochs}  loss {total_loss / n:.4f}  test acc {acc * 100:.2f} %  "
            f"lr {opt.param_groups[0]['lr']:.2e}  elapsed {time.time() - t0:.0f} s",
            flush=True,
        )
    return time.time() - t0


def write_layers_model(out_dir, generated_by, model_name, layers, weights, chunks):
    """Writes a tfjs layers-model folder: model.json (a Sequential of `layers`) and one weight shard."""
    manifest = {
        "format": "layers-model",
        "generatedBy": generated_by,
        "convertedBy": None,
        "modelTopology": {
            "class_name": "Sequential",
            "config": {"name": model_name, "layers": layers},
            "keras_version": "tfjs-layers 4.22.0",
            "backend": "tensor_flow.js",
        },
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": weights}],
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    with open(os.path.join(out_dir, "group1-shard1of1.bin"), "wb") as f:
        for c in chunks:
            f.write(c)
