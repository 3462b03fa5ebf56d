#!/usr/bin/python3
"""Train the character-CNN fixture on Fashion-MNIST and export it for TensorFlow.js.

The network has the shape of the character CNN of Jaderberg, Vedaldi & Zisserman
(2014), "Speeding up Convolutional Neural Networks with Low Rank Expansions":

    input 24x24x1
    conv1  9x9,  48 filters, valid, ReLU  -> 16x16x48
    conv2  9x9, 128 filters, valid, ReLU  ->  8x8x128
    conv3  8x8, 128 filters, valid, ReLU  ->  1x1x128
    conv4  1x1,  10 filters, linear       ->  1x1x10
    flatten, softmax

(no pooling). During training there is also batch norm after conv1-3 (folded
into the convolution weights before export) and dropout before conv4. It is
trained with Adam, a step learning-rate schedule and random 1 px shifts on
Fashion-MNIST, every 28x28 image being resized to 24x24 with PIL bilinear
resampling and stored back as uint8, so the model sees exactly what a 24x24
8-bit PNG divided by 255 gives.

Writes (relative to the repository root):
    fixtures/charcnn/model.json          tfjs "layers-model", weights float16-quantized
    fixtures/charcnn/group1-shard1of1.bin
    fixtures/fashion/labels.txt          the 10 class folder names, in output order
    fixtures/fashion/train/<class>/NNNN.png   100 per class from the train split
    fixtures/fashion/test/<class>/NNNN.png    100 per class from the test split

Needs: python3-torch, python3-numpy, python3-pil and the Debian package
dataset-fashion-mnist (or the four idx .gz files in the directory given as
the first argument). Run with the system interpreter: /usr/bin/python3.
"""

import argparse
import gzip
import os
import shutil
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import fixture_training  # beside this script

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = [
    "0_tshirt_top",
    "1_trouser",
    "2_pullover",
    "3_dress",
    "4_coat",
    "5_sandal",
    "6_shirt",
    "7_sneaker",
    "8_bag",
    "9_ankle_boot",
]
SEED = 20140515
SIZE = 24
SAMPLES_PER_CLASS = 100

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- data


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def resize_all(images):
    """28x28 uint8 -> 24x24 uint8 via PIL bilinear (round + clip back to uint8)."""
    out = np.empty((images.shape[0], SIZE, SIZE), dtype=np.uint8)
    for i, img in enumerate(images):
        r = Image.fromarray(img, mode="L").resize((SIZE, SIZE), Image.BILINEAR)
        a = np.asarray(r, dtype=np.float32)
        out[i] = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return out


def load_split(data_dir, prefix):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    return resize_all(images), labels.astype(np.int64)


# ---------------------------------------------------------------- model


class CharCNN(nn.Module):
    """The exported network: four convolutions, nothing else."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 48, 9)
        self.conv2 = nn.Conv2d(48, 128, 9)
        self.conv3 = nn.Conv2d(128, 128, 8)
        self.conv4 = nn.Conv2d(128, 10, 1)

    def forward(self, x):  # x: [N,1,24,24] in [0,1]; returns logits [N,10]
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = self.conv4(x)
        return torch.flatten(x, 1)


class CharCNNTrain(CharCNN):
    """Training-time variant: batch norm after conv1-3 (folded into the
    convolutions afterwards, see fold()) and dropout before conv4. Batch norm
    only speeds up training; the exported model is the plain CharCNN."""

    def __init__(self, dropout=0.3):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(48)
        self.bn2 = nn.BatchNorm2d(128)
        self.bn3 = nn.BatchNorm2d(128)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.conv4(self.dropout(x))
        return torch.flatten(x, 1)

    @torch.no_grad()
    def fold(self):
        """Plain CharCNN computing the same function as this model in eval mode."""
        out = CharCNN()
        for name, bn in (("conv1", self.bn1), ("conv2", self.bn2), ("conv3", self.bn3), ("conv4", None)):
            src, dst = getattr(self, name), getattr(out, name)
            w = src.weight.double()
            b = src.bias.double()
            if bn is not None:
                scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
                w = w * scale.view(-1, 1, 1, 1)
                b = (b - bn.running_mean.double()) * scale + bn.bias.double()
            dst.weight.copy_(w.float())
            dst.bias.copy_(b.float())
        return out.eval()


def to_input(u8):
    return torch.from_numpy(u8).float().div_(255.0).unsqueeze(1)


def augment(xb, gen, max_shift=1):
    """Random shifts of up to max_shift px in x and y (zero fill).

    (No horizontal flips: shoes and bags all face one way in Fashion-MNIST.)"""
    n = xb.shape[0]
    padded = F.pad(xb, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    out = torch.empty_like(xb)
    for i in range(n):
        out[i] = padded[i, :, dy[i] : dy[i] + SIZE, dx[i] : dx[i] + SIZE]
    return out


def accuracy(model, u8, labels):
    return fixture_training.accuracy(model, to_input, u8, labels)


def train(model, x_train, y_train, x_test, y_test, epochs, batch_size, lr):
    return fixture_training.train(model, to_input, augment, SEED, x_train, y_train, x_test, y_test, epochs, batch_size, lr)


# ---------------------------------------------------------------- export


def conv_config(name, filters, k, activation, input_shape=None):
    cfg = {
        "name": name,
        "trainable": True,
        "filters": filters,
        "kernel_size": [k, k],
        "strides": [1, 1],
        "padding": "valid",
        "data_format": "channels_last",
        "dilation_rate": [1, 1],
        "activation": activation,
        "use_bias": True,
        "dtype": "float32",
    }
    if input_shape is not None:
        cfg["batch_input_shape"] = [None] + list(input_shape)
    return {"class_name": "Conv2D", "config": cfg}


def export_tfjs(model, out_dir):
    layers = [
        conv_config("conv1", 48, 9, "relu", (SIZE, SIZE, 1)),
        conv_config("conv2", 128, 9, "relu"),
        conv_config("conv3", 128, 8, "relu"),
        conv_config("conv4", 10, 1, "linear"),
        {
            "class_name": "Flatten",
            "config": {"name": "flatten", "trainable": True, "dtype": "float32"},
        },
        {
            "class_name": "Activation",
            "config": {
                "name": "softmax",
                "trainable": True,
                "activation": "softmax",
                "dtype": "float32",
            },
        },
    ]
    weights = []
    chunks = []
    for name in ["conv1", "conv2", "conv3", "conv4"]:
        conv = getattr(model, name)
        kernel = conv.weight.detach().permute(2, 3, 1, 0).contiguous().numpy()
        bias = conv.bias.detach().numpy()
        for suffix, arr in (("kernel", kernel), ("bias", bias)):
            weights.append(
                {
                    "name": f"{name}/{suffix}",
                    "shape": list(arr.shape),
                    "dtype": "float32",
                    "quantization": {"dtype": "float16"},
                }
            )
            chunks.append(arr.astype("<f2").tobytes())
    fixture_training.write_layers_model(out_dir, "lowrank scripts/train_charcnn.py", "charcnn", layers, weights, chunks)


def float16_copy(model):
    m = CharCNN()
    m.load_state_dict(
        {k: v.half().float() for k, v in model.state_dict().items()}
    )
    m.eval()
    return m


def write_samples(u8, labels, out_dir, rng):
    """Write SAMPLES_PER_CLASS images per class; returns (images, labels) written."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    xs, ys = [], []
    for c, cname in enumerate(CLASS_NAMES):
        idx = np.flatnonzero(labels == c)
        chosen = np.sort(rng.choice(idx, SAMPLES_PER_CLASS, replace=False))
        cdir = os.path.join(out_dir, cname)
        os.makedirs(cdir)
        for j, i in enumerate(chosen):
            Image.fromarray(u8[i], mode="L").save(
                os.path.join(cdir, f"{j:04d}.png"), optimize=True
            )
        xs.append(u8[chosen])
        ys.append(np.full(SAMPLES_PER_CLASS, c, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def read_pngs(split_dir):
    xs, ys = [], []
    for c, cname in enumerate(CLASS_NAMES):
        cdir = os.path.join(split_dir, cname)
        for fname in sorted(os.listdir(cdir)):
            img = Image.open(os.path.join(cdir, fname))
            assert img.mode == "L" and img.size == (SIZE, SIZE), fname
            xs.append(np.asarray(img, dtype=np.uint8))
            ys.append(c)
    return np.stack(xs), np.array(ys, dtype=np.int64)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", nargs="?", default=DEFAULT_DATA_DIR,
                    help=f"directory with the Fashion-MNIST idx .gz files (default {DEFAULT_DATA_DIR})")
    fixture_training.add_training_arguments(ap, REPO_ROOT, epochs=8, lr=1e-3, total_images="60k")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    np.random.seed(SEED)

    t = time.time()
    x_train, y_train = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "t10k")
    print(f"loaded + resized {len(y_train)} train / {len(y_test)} test images "
          f"in {time.time() - t:.1f} s", flush=True)

    x_fit, y_fit = x_train, y_train
    if args.train_subset:
        sub = np.random.default_rng(SEED).permutation(len(y_train))[: args.train_subset]
        x_fit, y_fit = x_train[sub], y_train[sub]

    trained = CharCNNTrain()
    train_time = train(trained, x_fit, y_fit, x_test, y_test,
                       args.epochs, args.batch_size, args.lr)
    trained.eval()
    model = trained.fold()
    acc_bn = accuracy(trained, x_test, y_test)
    acc32 = accuracy(model, x_test, y_test)
    print(f"batch norm folded into the convolutions (test accuracy before folding: {acc_bn * 100:.2f} %)")
    print(f"training wall time: {train_time:.0f} s ({train_time / 60:.1f} min)")
    print(f"float32 test accuracy (full {len(y_test)} test set): {acc32 * 100:.2f} %")

    export_tfjs(model, os.path.join(args.out, "charcnn"))

    fashion = os.path.join(args.out, "fashion")
    os.makedirs(fashion, exist_ok=True)
    with open(os.path.join(fashion, "labels.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")
    rng = np.random.default_rng(SEED)
    write_samples(x_train, y_train, os.path.join(fashion, "train"), rng)
    write_samples(x_test, y_test, os.path.join(fashion, "test"), rng)

    # accuracy of the float16-rounded weights on the PNGs as read back from disk
    x_png, y_png = read_pngs(os.path.join(fashion, "test"))
    m16 = float16_copy(model)
    acc16 = accuracy(m16, x_png, y_png)
    acc32_png = accuracy(model, x_png, y_png)
    print(f"float32 accuracy on the {len(y_png)} test PNGs: {acc32_png * 100:.2f} %")
    print(f"float16-weight accuracy on the {len(y_png)} test PNGs: {acc16 * 100:.2f} %")


if __name__ == "__main__":
    main()
