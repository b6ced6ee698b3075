"""In-process A/B of each special code path against its plain PyTorch form (run on main at 125e27a).

Training step of the medium preset, window 128, 9 synthetic channels, batch 16, fp32, one thread,
with and without gradient checkpointing. Each variant patches one path back to the plain form;
all variants run in every round, in turn; the figure is the median over rounds of
(variant step time / baseline step time) in that round. Peak tensor memory of one step too.
"""
from __future__ import annotations

import argparse, contextlib, statistics, tempfile, time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import tgatunet.model.dropout as dropout_mod
import tgatunet.model.gat as gat_mod
import tgatunet.model.lite_gat as lite_gat_mod
import tgatunet.model.tgat_unet as unet_mod
import tgatunet.model.transformer as tr_mod
import tgatunet.train.module as module_mod
from tgatunet.bench.compute import Setting, prepare_setting
from tgatunet.bench.step import TrainStep, to_device
from tgatunet.profiling import peak_memory_bytes


def plain_banded_aggregate(alpha, h, bias=None):
    B, T, H, Fh = h.shape
    r = alpha.shape[2] // 2
    padded = F.pad(h, (0, 0, 0, 0, r, r))
    out = sum(alpha[:, :, j, :, None] * padded[:, j : j + T] for j in range(2 * r + 1))
    out = out.reshape(B, T, H * Fh)
    return out if bias is None else out + bias.reshape(-1)


class TorchTransformer(nn.Module):
    def __init__(self, dim, heads, ff_dim, dropout):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=True)

    def forward(self, x):
        return self.layer(x)


def plain_pool(h):
    return F.avg_pool1d(h.transpose(1, 2), 2, ceil_mode=True).transpose(1, 2)


def plain_upsample(h, steps):
    return h if h.shape[1] == steps else F.interpolate(h.transpose(1, 2), size=steps, mode="nearest").transpose(1, 2)


def gat_forward_plain(self, x, index, valid, radius=None):
    """GATConv's function the textbook way: project, scores a^T h per head, banded or gathered, + bias."""
    B, T, _ = x.shape
    H, Fh = self.heads, self.out_channels
    h = self.lin(x).view(B, T, H, Fh)
    score_src = (h * self.att_src).sum(-1)
    score_dst = (h * self.att_dst).sum(-1)
    if radius is None:
        radius = gat_mod.band_radius(index, valid)
    src_nb = gat_mod.banded_scores(score_src, radius)
    e = F.leaky_relu(src_nb + score_dst[:, :, None, :], self.negative_slope)
    alpha = gat_mod.dropout(torch.softmax(e, dim=2), self.dropout, self.training)
    out = gat_mod.banded_aggregate(alpha, h)
    return out + self.bias


def unfused_optimizers(self):
    opt = torch.optim.AdamW(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
    return {"optimizer": opt}


ORIGINAL_FORWARD = gat_mod.BatchedGATConv.forward


def gat_forward_unfolded(self, x, index, valid, radius=None):
    bias = self.bias
    out = ORIGINAL_FORWARD(self, x, index, valid, radius) if False else None
    # run the original with the bias removed, then add it: no folding
    self.bias = None
    try:
        out = ORIGINAL_FORWARD(self, x, index, valid, radius)
    finally:
        self.bias = bias
    return out + bias


VARIANTS = {
    "baseline": [],
    "dropout: torch's F.dropout and SDPA dropout (no 16-bit masks)": [
        (dropout_mod, "draws_shares", lambda x: False), (tr_mod, "draws_shares", lambda x: False)],
    "attention: SDPA's own dropout (16-bit masks elsewhere)": [(tr_mod, "draws_shares", lambda x: False)],
    "GAT bias added after (not folded)": [(gat_mod.BatchedGATConv, "forward", gat_forward_unfolded)],
    "GAT scores a^T h per head (vs bias-after variant)": [(gat_mod.BatchedGATConv, "forward", gat_forward_plain)],
    "transformer: nn.TransformerEncoderLayer": [(unet_mod, "TransformerLayer", TorchTransformer)],
    "banded sum: plain autograd (no BandedSum)": [(gat_mod, "banded_aggregate", plain_banded_aggregate),
                                                   (lite_gat_mod, "banded_aggregate", plain_banded_aggregate)],
    "temporal graph gathered (no banded path)": [(gat_mod, "band_radius", lambda i, v: None),
                                                 (unet_mod.TGATUNet, "_graph", lambda self, steps, full, nb, dev: (*unet_mod.temporal_neighbors(steps, self.spec.time_k, str(dev)), None))],
    "local path: nn.Conv1d (not one matmul)": [(unet_mod, "local_linear", lambda conv, x: conv(x.transpose(1, 2)).transpose(1, 2))],
    "pool/upsample: avg_pool1d / interpolate": [(unet_mod, "pool_pairs", plain_pool), (unet_mod, "upsample_to", plain_upsample)],
    "AdamW not fused": [(module_mod.TGATUNetModule, "configure_optimizers", unfused_optimizers)],
}


@contextlib.contextmanager
def patched(items):
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in items]
    for obj, name, value in items:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    names = [n for n in VARIANTS if not args.only or n == "baseline" or any(o in n for o in args.only)]
    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in (True, False):
            setting = Setting(config={"use_gradient_checkpoint": ckpt})
            config, data, base_module, loader = prepare_setting(setting, Path(tmp) / f"c{ckpt}", device)
            batches = [to_device(b, device) for b, _ in zip(loader, range(args.steps))]
            steps, memory = {}, {}
            for name in names:
                with patched(VARIANTS[name]):
                    torch.manual_seed(0)
                    module = type(base_module)(**base_module.hparams)
                    module.load_state_dict(base_module.state_dict(), strict=False)
                    step = TrainStep(module)
                    step.set_batch(batches[0]); step()  # warm-up
                    memory[name] = peak_memory_bytes(step)
                steps[name] = step
            times = {n: [] for n in names}
            for _ in range(args.rounds):
                for name in names:
                    with patched(VARIANTS[name]):
                        step = steps[name]
                        start = time.perf_counter()
                        for b in batches:
                            step.set_batch(b)
                            torch.manual_seed(1)
                            step()
                        times[name].append((time.perf_counter() - start) / len(batches))
            print(f"\n== checkpointing {'on' if ckpt else 'off'}: baseline {1e3 * statistics.median(times['baseline']):.1f} ms/step, peak {memory['baseline'] / 2**20:.1f} MiB")
            print(f"{'variant':70s} {'speed of special path':>22s} {'memory of plain / special':>26s}")
            for name in names[1:]:
                ratio = statistics.median(p / b for p, b in zip(times[name], times["baseline"]))
                print(f"{name:70s} {ratio:22.3f} {memory[name] / memory['baseline']:26.3f}")


if __name__ == "__main__":
    main()
