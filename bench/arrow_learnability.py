"""How fast does a model leave chance on arrow pointing? A plain GPU training loop on the cached
½-scale training images (100,000 by default, standardised), printing training loss / accuracy
and the accuracy on 4,096 validation images every 500 steps until --seconds have passed.

Models: a small ResNet (BatchNorm CNN, 2.8 M parameters), or the repository's ViT-T / pLSTM-Vis-T
with their paper set-up (linear patch stem, no head norm; ``--sincos`` starts the ViT's position
embedding from 2D sine-cosine values). docs/results.md reports what it showed: the ResNet learns
the task within one epoch while the token models stay at chance.

    python3 bench/arrow_learnability.py --model resnet --lr 1e-3 --seconds 420   # needs CUDA
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import create_model
from training.data.arrows import render_images, split_resolutions


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


def resnet():
    layers = [nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
    cin = 32
    for cout in (32, 64, 128, 256):
        layers += [Basic(cin, cout, 2), Basic(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 2)]
    return nn.Sequential(*layers)


def sincos(grid, dim):
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    q = dim // 4
    freq = 1.0 / (100.0 ** (torch.arange(q) / q))
    parts = [
        torch.sin(x[..., None] * freq),
        torch.cos(x[..., None] * freq),
        torch.sin(y[..., None] * freq),
        torch.cos(y[..., None] * freq),
    ]
    return torch.cat(parts, -1)[None]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="vit", choices=("resnet", "vit", "plstm"))
    p.add_argument("--scale", type=float, default=0.5, help="arrow geometry scale (0.5: 96 px)")
    p.add_argument("--patch", type=int, default=8, help="patch size of the token models")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW lr after 500 warm-up steps")
    p.add_argument("--wd", type=float, default=0.05, help="AdamW weight decay")
    p.add_argument("--seconds", type=float, default=400, help="training time")
    p.add_argument("--n", type=int, default=100_000, help="training images")
    p.add_argument("--sincos", action="store_true", help="ViT: sine-cosine position init")
    a = p.parse_args()
    res, _ = split_resolutions(a.scale)
    t0 = time.time()
    imgs, labels = render_images(0, a.n, res, a.scale)
    vimgs, vlabels = render_images(30_001, 4096, res, a.scale)
    print(f"[{a}] data {time.time() - t0:.0f}s", flush=True)
    dev = "cuda"
    X = torch.from_numpy(imgs).to(dev)
    Y = torch.from_numpy(labels).to(dev)
    VX = torch.from_numpy(vimgs).to(dev)
    VY = torch.from_numpy(vlabels).to(dev)
    mean, std = 0.9525, 0.2126

    def prep(u8):
        x = (u8.float() / 255 - mean) / std
        return x[:, None].expand(-1, 3, -1, -1)

    if a.model == "resnet":
        model = resnet()
    else:
        name = "vit_t" if a.model == "vit" else "plstm_vis_t"
        kw = {"layer_scale": 1.0} if a.model == "vit" else {}
        model = create_model(
            name, img_size=res, patch_size=a.patch, in_chans=3, num_classes=2, **kw
        )
        if a.sincos:
            with torch.no_grad():
                model.pos_embed.copy_(sincos(res // a.patch, model.dim))
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd, fused=True)
    step, t0, seen = 0, time.time(), 0
    hist = []
    while time.time() - t0 < a.seconds:
        perm = torch.randperm(a.n, device=dev)
        for i in range(0, a.n - a.batch + 1, a.batch):
            idx = perm[i : i + a.batch]
            warm = min(1.0, step / 500)
            for g in opt.param_groups:
                g["lr"] = a.lr * warm
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(prep(X[idx]))
            loss = F.cross_entropy(out.float(), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            hist.append((loss.detach(), (out.argmax(-1) == Y[idx]).float().mean()))
            step += 1
            seen += a.batch
            if step % 500 == 0:
                tl = torch.stack([h[0] for h in hist]).mean().item()
                ta = torch.stack([h[1] for h in hist]).mean().item()
                hist = []
                model.eval()
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    va = (
                        sum(
                            (model(prep(VX[j : j + 512])).argmax(-1) == VY[j : j + 512])
                            .sum()
                            .item()
                            for j in range(0, 4096, 512)
                        )
                        / 4096
                    )
                model.train()
                print(
                    f"step {step} ep {seen / a.n:.2f} t {time.time() - t0:.0f}s loss {tl:.4f} "
                    f"acc {ta:.3f} val {va:.3f}",
                    flush=True,
                )
            if time.time() - t0 > a.seconds:
                break


if __name__ == "__main__":
    main()
