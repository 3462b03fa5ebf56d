"""Training loop shared by the fixture scripts (train_charcnn.py, train_cifar.py).

Adam with a step schedule (full rate for ~60 % of the epochs, then /3, then /10), seeded shuffles and
augmentation, and the test accuracy after every epoch. Each script brings its own input scaling
(`to_input`) and augmentation (`augment(batch, generator)`).
"""
import time

import torch
import torch.nn.functional as F


@torch.no_grad()
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
