#!/usr/bin/python3
"""Train the CIFAR-10 CNN fixture and export it for TensorFlow.js.

A small CNN, the shape of the classic
"CIFAR-10 quick" example networks:

    input 32x32x3 (RGB / 255)
    conv1  5x5, 32 filters, same, ReLU, max-pool 2x2  -> 16x16x32
    conv2  5x5, 32 filters, same, ReLU, max-pool 2x2  ->  8x8x32
    conv3  5x5, 64 filters, same, ReLU, max-pool 2x2  ->  4x4x64
    flatten (1024), dense1 64 ReLU, dense2 10 softmax

Batch norm after conv1-3 during training only (folded into the convolutions
before export). Adam, a step learning-rate schedule, random crops (4 px
padding) and horizontal flips.

Input: the CIFAR-10 images as JPEG files in class folders,
    <data_dir>/{train,test}/<class>/NNNN.jpg
with the ten classes airplane ... truck (50,000 training and 10,000 test
images); several public repositories hold them in this layout.

Writes (relative to the repository root):
    fixtures/cifar/model.json, fixtures/cifar/group1-shard1of1.bin
        tfjs "layers-model", float32 weights
    fixtures/cifar10/labels.txt        the 10 class folder names, in output order
    fixtures/cifar10/train/<class>/NNNN.jpg   500 per class from the train split
    fixtures/cifar10/test/<class>/NNNN.jpg    100 per class from the test split
        (the JPEG files copied byte for byte)

Needs python3-torch, python3-numpy and python3-pil. Run with the system
interpreter: /usr/bin/python3. The defaults (6 epochs of all 50,000 training
images) give a model of typical quality (69.5 % on the 1,000 test JPEGs) in
about 6 minutes on 2 idle CPU cores.
"""

import argparse
import os
import shutil
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import fixture_training  # beside this script

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SEED = 20141203
SIZE = 32
TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- data


def list_split(data_dir, split):
    """[(path, label)] for every JPEG of a split, in class then file-name order."""
    out = []
    for c, cname in enumerate(CLASS_NAMES):
        cdir = os.path.join(data_dir, split, cname)
        for fname in sorted(os.listdir(cdir)):
            if fname.lower().endswith((".jpg", ".jpeg", ".png")):
                out.append((os.path.join(cdir, fname), c))
    return out


def load(files):
    x = np.empty((len(files), SIZE, SIZE, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        img = Image.open(path).convert("RGB")
        assert img.size == (SIZE, SIZE), path
        x[i] = np.asarray(img, dtype=np.uint8)
    return x, np.array([label for _, label in files], dtype=np.int64)


def to_input(u8):
    """NHWC uint8 -> NCHW float in [0, 1]."""
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float().div_(255.0)


def augment(xb, gen, pad=4):
    """Random crops of the zero-padded images and horizontal flips."""
    n = xb.shape[0]
    padded = F.pad(xb, (pad,) * 4)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(xb)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + SIZE, dx[i] : dx[i] + SIZE]
        out[i] = crop.flip(2) if flip[i] else crop
    return out


# ---------------------------------------------------------------- model


class CifarCNN(nn.Module):
    """The exported network."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.dense1 = nn.Linear(1024, 64)
        self.dense2 = nn.Linear(64, 10)

    def features(self, x, norms=(None, None, None)):
        for conv, bn in zip((self.conv1, self.conv2, self.conv3), norms):
            x = conv(x)
            if bn is not None:
                x = bn(x)
            x = F.max_pool2d(F.relu(x), 2)
        return torch.flatten(x, 1)

    def forward(self, x):  # logits
        return self.dense2(F.relu(self.dense1(self.features(x))))


class CifarCNNTrain(CifarCNN):
    """Training-time variant: batch norm after conv1-3 and dropout before dense2."""

    def __init__(self, dropout=0.3):
        super().__init__()
        self.bn = nn.ModuleList([nn.BatchNorm2d(32), nn.BatchNorm2d(32), nn.BatchNorm2d(64)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        h = F.relu(self.dense1(self.features(x, tuple(self.bn))))
        return self.dense2(self.dropout(h))

    @torch.no_grad()
    def fold(self):
        """Plain CifarCNN computing the same function as this model in eval mode."""
        out = CifarCNN()
        out.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("bn.")})
        for conv, bn in zip((out.conv1, out.conv2, out.conv3), self.bn):
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).float())
            conv.bias.copy_(((conv.bias.double() - bn.running_mean.double()) * scale + bn.bias.double()).float())
        return out.eval()


def accuracy(model, u8, labels):
    return fixture_training.accuracy(model, to_input, u8, labels)


def train(model, x_train, y_train, x_test, y_test, epochs, batch_size, lr):
    return fixture_training.train(model, to_input, augment, SEED, x_train, y_train, x_test, y_test, epochs, batch_size, lr)


# ---------------------------------------------------------------- export


def layer(class_name, name, **config):
    return {"class_name": class_name, "config": {"name": name, "trainable": True, "dtype": "float32", **config}}


def conv(name, filters, input_shape=None):
    extra = {"batch_input_shape": [None, SIZE, SIZE, 3]} if input_shape else {}
    return layer(
        "Conv2D", name, filters=filters, kernel_size=[5, 5], strides=[1, 1], padding="same",
        data_format="channels_last", dilation_rate=[1, 1], activation="relu", use_bias=True, **extra,
    )


def pool(name):
    return layer("MaxPooling2D", name, pool_size=[2, 2], strides=[2, 2], padding="valid", data_format="channels_last")


def export_tfjs(model, out_dir):
    layers = [
        conv("conv1", 32, True), pool("pool1"),
        conv("conv2", 32), pool("pool2"),
        conv("conv3", 64), pool("pool3"),
        layer("Flatten", "flatten"),
        layer("Dense", "dense1", units=64, activation="relu", use_bias=True),
        layer("Dense", "dense2", units=10, activation="softmax", use_bias=True),
    ]
    tensors = []
    for name in ("conv1", "conv2", "conv3"):
        c = getattr(model, name)
        tensors.append((f"{name}/kernel", c.weight.detach().permute(2, 3, 1, 0)))
        tensors.append((f"{name}/bias", c.bias.detach()))
    # PyTorch flattens NCHW (c, h, w); tfjs flattens NHWC (h, w, c).
    w1 = model.dense1.weight.detach().view(64, 64, 4, 4).permute(2, 3, 1, 0).reshape(1024, 64)
    tensors += [("dense1/kernel", w1), ("dense1/bias", model.dense1.bias.detach())]
    tensors += [("dense2/kernel", model.dense2.weight.detach().t()), ("dense2/bias", model.dense2.bias.detach())]
    weights, chunks = [], []
    for name, t in tensors:
        arr = t.contiguous().numpy().astype("<f4")
        weights.append({"name": name, "shape": list(arr.shape), "dtype": "float32"})
        chunks.append(arr.tobytes())
    fixture_training.write_layers_model(out_dir, "lowrank scripts/train_cifar.py", "cifar", layers, weights, chunks)


def copy_samples(files, labels, per_class, out_dir, rng):
    """Copies `per_class` randomly chosen files of each class; returns the chosen indices."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    chosen_all = []
    for c, cname in enumerate(CLASS_NAMES):
        chosen = np.sort(rng.choice(np.flatnonzero(labels == c), per_class, replace=False))
        cdir = os.path.join(out_dir, cname)
        os.makedirs(cdir)
        for j, i in enumerate(chosen):
            shutil.copyfile(files[i][0], os.path.join(cdir, f"{j:04d}.jpg"))
        chosen_all.extend(chosen)
    return np.array(chosen_all)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", help="folder holding train/<class>/*.jpg and test/<class>/*.jpg")
    fixture_training.add_training_arguments(ap, REPO_ROOT, epochs=6, lr=2e-3, total_images="50k")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)

    t = time.time()
    train_files = list_split(args.data_dir, "train")
    test_files = list_split(args.data_dir, "test")
    x_train, y_train = load(train_files)
    x_test, y_test = load(test_files)
    print(f"loaded {len(y_train)} train / {len(y_test)} test images in {time.time() - t:.1f} s", flush=True)

    x_fit, y_fit = x_train, y_train
    if args.train_subset:
        sub = np.random.default_rng(SEED).permutation(len(y_train))[: args.train_subset]
        x_fit, y_fit = x_train[sub], y_train[sub]

    trained = CifarCNNTrain()
    train_time = train(trained, x_fit, y_fit, x_test, y_test, args.epochs, args.batch_size, args.lr)
    trained.eval()
    model = trained.fold()
    print(f"training wall time: {train_time:.0f} s ({train_time / 60:.1f} min)")
    print(f"test accuracy (full {len(y_test)} test set): {accuracy(model, x_test, y_test) * 100:.2f} %")

    export_tfjs(model, os.path.join(args.out, "cifar"))
    images = os.path.join(args.out, "cifar10")
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(images, "labels.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")
    rng = np.random.default_rng(SEED)
    copy_samples(train_files, y_train, TRAIN_PER_CLASS, os.path.join(images, "train"), rng)
    chosen = copy_samples(test_files, y_test, TEST_PER_CLASS, os.path.join(images, "test"), rng)
    acc = accuracy(model, x_test[chosen], y_test[chosen])
    print(f"accuracy on the {len(chosen)} test JPEGs: {acc * 100:.2f} %")


if __name__ == "__main__":
    main()
