"""Reference training loops for the speed benchmark, written outside the library's engine.

The issue compares the library with two kinds of reference, and ``run.py`` times both in the same job
as the library so the ratios come from one machine:

``ref_plain_dann``   plain PyTorch: the MNIST and USPS training sets preprocessed once and resident on
                     the GPU, random batches by index, one loop (forward, losses, backward, SGD step,
                     Ganin GRL schedule, (1+10p)^-0.75 learning-rate annealing). With ``compile`` set, the
                     forward and the losses are one ``torch.compile``d function (``reduce-overhead``: CUDA
                     graphs); backward and the optimizer step stay eager.
``ref_loader_dann``  the input pipeline TLlib's digits examples use: samples as PIL images, torchvision
                     transforms per sample (Resize, ToTensor, Normalize), a ``DataLoader`` with 2 workers
                     and pinned memory, batches copied to the GPU; the same eager step as ``ref_plain_dann``.
                     This is our re-creation of that pipeline, not TLlib's code.

Both use the same network as the library's ``configs/digits/mnist_usps_dann.yaml`` (built by the library,
so the two loops train identical modules: LeNet + bottleneck, linear head, 1024-unit discriminator) and
the same hyper-parameters (batch 128 + 128, SGD lr 0.01, momentum 0.9, Nesterov, weight decay 1e-3).
They report speed only; no accuracy is claimed for them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]


class _Reverse(torch.autograd.Function):
    """Gradient reversal with the coefficient as a tensor, so changing it never recompiles."""

    @staticmethod
    def forward(ctx, x, coeff):
        ctx.save_for_backward(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (coeff,) = ctx.saved_tensors
        return -grad * coeff, None


def _modules(data_root):
    from transferlab.experiment import load_config
    from transferlab.experiment import build

    config = load_config(REPO / "configs" / "digits" / "mnist_usps_dann.yaml", ["train.iterations=10000"])
    experiment = build(config, data_root)
    return config, experiment


def worker(spec: dict) -> dict:
    """One timed measurement (same result fields as ``run.py``'s library worker)."""
    import math

    import numpy as np

    from common import timed_windows  # benchmarks/common.py (run.py puts benchmarks/ on the path)
    from transferlab.engine import device_description

    torch.manual_seed(0)
    config, experiment = _modules(spec.get("data_root"))
    device = torch.device("cuda" if spec["device"] in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    method = experiment.method.to(device)
    encoder, head, disc = method.encoder, method.head, method.domain_loss.discriminator
    batch = spec["batch_size"]
    total = config.train.iterations
    params = list(encoder.parameters()) + list(head.parameters()) + list(disc.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def losses(xs, ys, xt, coeff):
        f = encoder(torch.cat([xs, xt]))
        cls = F.cross_entropy(head(f[:batch]), ys)
        d = disc(_Reverse.apply(f, coeff)).float()
        dom = 0.5 * (F.binary_cross_entropy_with_logits(d[:batch], torch.ones_like(d[:batch]))
                     + F.binary_cross_entropy_with_logits(d[batch:], torch.zeros_like(d[batch:])))
        return cls + dom

    compiled = spec["compile"] != "none"
    loss_fn = torch.compile(losses, mode=None if spec["compile"] == "default" else spec["compile"]) if compiled else losses
    coeff = torch.zeros((), device=device)

    if spec["case"] == "ref_plain_dann":
        # the whole training sets, preprocessed once by the library's transform, resident on the device
        def resident(ds):
            return torch.cat([experiment.transform(ds.x[i:i + 8192].to(device)) for i in range(0, len(ds), 8192)])
        xs_all, ys_all = resident(experiment.source), experiment.source.y.to(device)
        xt_all = resident(experiment.target)
        n_s, n_t = len(xs_all), len(xt_all)

        def next_batches():
            i = torch.randint(n_s, (batch,), device=device)
            j = torch.randint(n_t, (batch,), device=device)
            return xs_all[i], ys_all[i], xt_all[j]
    else:
        from PIL import Image
        from torchvision import transforms as T

        tf = T.Compose([T.Resize(28), T.ToTensor(), T.Normalize((0.5,), (0.5,))])

        class PILDigits(torch.utils.data.Dataset):
            def __init__(self, ds):
                x = ds.x.numpy()
                self.x = x if x.dtype == np.uint8 else (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
                self.y = ds.y.numpy()

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                return tf(Image.fromarray(self.x[i])), int(self.y[i])

        def forever(ds):
            loader = torch.utils.data.DataLoader(PILDigits(ds), batch_size=batch, shuffle=True, num_workers=2,
                                                 pin_memory=device.type == "cuda", drop_last=True)
            while True:
                yield from loader

        src, tgt = forever(experiment.source), forever(experiment.target)

        def next_batches():
            (xs, ys), (xt, _) = next(src), next(tgt)
            return (xs.to(device, non_blocking=True), ys.to(device, non_blocking=True),
                    xt.to(device, non_blocking=True))

    step = 0

    def train_step():
        nonlocal step
        p = step / total
        for g in opt.param_groups:
            g["lr"] = 0.01 * (1 + 10 * p) ** -0.75
        coeff.fill_(2.0 / (1.0 + math.exp(-10 * p)) - 1.0)
        if spec["compile"] == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        loss = loss_fn(*next_batches(), coeff)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    timing = timed_windows(lambda n: [train_step() for _ in range(n)], spec["warmup"], spec["steps"],
                           spec["windows"], sync, 2 * batch)
    if device.type == "cuda":
        peak, mem_method = torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    else:
        import resource

        peak, mem_method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS (ru_maxrss)"
    return {
        **timing, "peak_mem_mb": peak, "peak_mem_total_mb": peak, "mem_method": mem_method,
        "device": device_description(device), "device_type": device.type,
        "batch_size": batch, "backbone": config.model.backbone, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "dynamo": {}, "final_step": step,
    }
