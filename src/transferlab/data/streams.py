"""Batches and infinite, resumable sample streams.

Source and target are drawn as two independent infinite streams, so neither domain's epoch length
decides when training ends (the engine counts iterations). A :class:`TensorStream` keeps its
dataset resident on the training device and shuffles by epochs: epoch ``e`` visits a permutation
drawn from a generator seeded with ``(seed, e)``, so the stream's whole state is two integers and a
resumed run draws exactly the batches an uninterrupted one would. Data that is not one fixed-shape tensor
(sparse features, token ids, audio) goes through a :class:`SampleStream` with the same guarantees, which
gathers and pads each batch on the host and may bucket samples of similar length into one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import DataError
from .batch import Batch, concat_inputs, to_device  # noqa: F401  (Batch and concat_inputs are re-exported)
from .datasets import ArrayDataset

Transform = Callable[[torch.Tensor], Any]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a permutation of ``range(n)`` fixed by ``(seed, epoch)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class TensorStream:
    """Endless shuffled mini-batches from an :class:`ArrayDataset` resident on ``device``.

    ``pretransform=True`` applies a deterministic ``transform`` (one marked ``deterministic = True``, such
    as :class:`~transferlab.data.transforms.ImageTransform`) to the whole set once, so each step only
    gathers rows: the batches are the same, and a training step launches fewer kernels.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, seed: int, device: torch.device | str = "cpu",
                 transform: Transform | None = None, labelled: bool = True, pretransform: bool = False) -> None:
        if len(dataset) == 0:
            raise DataError(f"{dataset.name}/{dataset.part} is empty: a training stream needs at least one batch")
        if batch_size > len(dataset):
            raise DataError(
                f"{dataset.name}/{dataset.part} has {len(dataset)} samples, fewer than the batch size "
                f"{batch_size}; lower data.batch_size"
            )
        self.device = torch.device(device)
        if pretransform and transform is not None:
            if not getattr(transform, "deterministic", False):
                raise ValueError(f"{type(transform).__name__} is not marked deterministic; it cannot be applied ahead")
            self.x = torch.cat([transform(dataset.x[i:i + 4096].to(self.device)) for i in range(0, len(dataset), 4096)])
            transform = None
        else:
            self.x = dataset.x.to(self.device)
        self.y = dataset.y.to(self.device) if labelled and dataset.y is not None else None
        self.batch_size = batch_size
        self.seed = seed
        self.transform = transform
        self.batches_per_epoch = len(dataset) // batch_size  # drop_last: every batch is full
        self.epoch = 0
        self.position = 0  # batches already drawn in this epoch
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        return epoch_permutation(len(self.x), self.seed, epoch).to(self.device, non_blocking=True)

    def __iter__(self) -> TensorStream:
        return self

    def __next__(self) -> Batch:
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        index = self._order[self.position * self.batch_size : (self.position + 1) * self.batch_size]
        self.position += 1
        x = self.x[index]
        return Batch(self.transform(x) if self.transform else x, None if self.y is None else self.y[index])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


class _EpochSampler(torch.utils.data.Sampler):
    """Yields ``epoch_permutation`` from batch ``start`` on (drop_last): the order TensorStream uses."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start: int) -> None:
        self.n, self.batch_size, self.seed, self.epoch, self.start = n, batch_size, seed, epoch, start

    def __iter__(self):
        usable = (self.n // self.batch_size) * self.batch_size
        return iter(epoch_permutation(self.n, self.seed, self.epoch)[self.start * self.batch_size : usable].tolist())

    def __len__(self) -> int:
        return (self.n // self.batch_size - self.start) * self.batch_size


class LoaderStream:
    """Endless shuffled mini-batches through a ``DataLoader`` with worker processes, for data that should
    not live on the device (large or lazily loaded sets). It draws exactly the batches a
    :class:`TensorStream` with the same seed would, and resumes from ``(epoch, position)`` the same way.

    ``dataset`` is any map-style dataset returning ``(x, y)`` per index (an :class:`ArrayDataset` works).
    """

    def __init__(self, dataset, batch_size: int, *, seed: int, device: torch.device | str = "cpu",
                 transform: Transform | None = None, labelled: bool = True, num_workers: int = 2) -> None:
        if len(dataset) < batch_size:
            raise DataError(f"dataset has {len(dataset)} samples, fewer than the batch size {batch_size}; "
                            f"lower data.batch_size")
        self.dataset = _Pairs(dataset) if isinstance(dataset, ArrayDataset) else dataset
        self.batch_size, self.seed, self.transform, self.labelled = batch_size, seed, transform, labelled
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.batches_per_epoch = len(dataset) // batch_size
        self.epoch, self.position = 0, 0
        self._iterator = None

    def _start(self) -> None:
        sampler = _EpochSampler(len(self.dataset), self.batch_size, self.seed, self.epoch, self.position)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )
        self._iterator = iter(loader)

    def __iter__(self) -> LoaderStream:
        return self

    def __next__(self) -> Batch:
        if self.position == self.batches_per_epoch:
            self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
        if self._iterator is None:
            self._start()
        x, y = next(self._iterator)
        self.position += 1
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True) if self.labelled else None
        return Batch(self.transform(x) if self.transform else x, y)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._iterator = None


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, dataset: ArrayDataset) -> None:
        self.x, self.y = dataset.x, dataset.y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        return self.x[index], self.y[index]


def bucketed_batches(lengths: torch.Tensor, batch_size: int, seed: int, epoch: int,
                     window: int = 50) -> list[torch.Tensor]:
    """One epoch of length-bucketed batches: the epoch's permutation is cut into windows of ``window`` batches,
    each window is sorted by length and cut into batches (so a batch holds samples of similar length and needs
    little padding), and the batch order is shuffled. Every sample is in at most one batch; with ``drop_last``
    only the ``len % batch_size`` samples of the last window that fill no batch are left out, as without buckets.
    Fixed by ``(seed, epoch)``."""
    order = epoch_permutation(len(lengths), seed, epoch)
    usable = (len(order) // batch_size) * batch_size
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    full = [b for b in batches if len(b) == batch_size][: usable // batch_size]
    shuffle = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7))
    return [full[i] for i in shuffle.tolist()]


class SampleStream:
    """Endless shuffled mini-batches of a dataset that is not one dense tensor: ``dataset.batch(index)`` gathers
    (and pads) the rows of each batch on the host, which then go to ``device``. Sparse features become dense
    here, for one batch at a time.

    Epoch ``e``'s order is fixed by ``(seed, e)`` (:func:`epoch_permutation`, or :func:`bucketed_batches` with
    ``bucket=True`` and a dataset with ``lengths``), so the state is ``(epoch, position)`` and a resumed stream
    draws exactly the batches an uninterrupted one draws."""

    def __init__(self, dataset, batch_size: int, *, seed: int, device: torch.device | str = "cpu",
                 transform: Transform | None = None, labelled: bool = True, bucket: bool = False) -> None:
        if len(dataset) == 0:
            raise DataError(f"{dataset.name}/{dataset.part} is empty: a training stream needs at least one batch")
        if batch_size > len(dataset):
            raise DataError(f"{dataset.name}/{dataset.part} has {len(dataset)} samples, fewer than the batch size "
                            f"{batch_size}; lower data.batch_size")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.device = torch.device(device)
        self.transform, self.labelled = transform, labelled and dataset.y is not None
        self.bucket = bucket and getattr(dataset, "lengths", None) is not None
        self.batches_per_epoch = len(dataset) // batch_size
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        if self.bucket:
            return bucketed_batches(self.dataset.lengths, self.batch_size, self.seed, epoch)
        order = epoch_permutation(len(self.dataset), self.seed, epoch)
        return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.batches_per_epoch)]

    def __iter__(self) -> SampleStream:
        return self

    def __next__(self) -> Batch:
        if self.position == len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches(self.epoch)
        index = self._batches[self.position]
        self.position += 1
        x = to_device(self.dataset.batch(index), self.device)
        y = self.dataset.y[index].to(self.device, non_blocking=True) if self.labelled else None
        return Batch(self.transform(x) if self.transform else x, y, _targets(self.dataset, index, self.device))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._batches = self._epoch_batches(self.epoch)


def _targets(dataset, index: torch.Tensor, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The per-sample targets of a batch (CTC labels, speaker groups), on ``device``; none for most sets."""
    if not getattr(dataset, "targets", None):
        return {}
    return {k: v.to(device, non_blocking=True) for k, v in dataset.batch_targets(index).items()}


def make_stream(dataset, batch_size: int, *, seed: int, device: torch.device | str = "cpu",
                transform: Transform | None = None, labelled: bool = True, max_device_bytes: int = 2 << 30,
                num_workers: int = 2, max_pretransform_bytes: int = 512 << 20, bucket: bool = False):
    """A :class:`TensorStream` when the set is one dense tensor that fits ``max_device_bytes`` (all digit sets do),
    a :class:`LoaderStream` when it is larger, and a :class:`SampleStream` for sparse, text and audio sets
    (``bucket``: batches of similar length). A deterministic transform is applied ahead, once, when its output fits
    ``max_pretransform_bytes`` (MNIST as 28x28 float: 188 MB; as 32x32 RGB it would be 737 MB, so it is not)."""
    if not isinstance(dataset, ArrayDataset):
        return SampleStream(dataset, batch_size, seed=seed, device=device, transform=transform, labelled=labelled,
                            bucket=bucket)
    size = dataset.x.element_size() * dataset.x.nelement()
    if size <= max_device_bytes:
        pretransform = False
        if transform is not None and getattr(transform, "deterministic", False) and len(dataset):
            one = transform(dataset.x[:1])
            pretransform = one.element_size() * one.nelement() * len(dataset) <= min(max_pretransform_bytes, max_device_bytes)
        return TensorStream(dataset, batch_size, seed=seed, device=device, transform=transform, labelled=labelled,
                            pretransform=pretransform)
    return LoaderStream(dataset, batch_size, seed=seed, device=device, transform=transform, labelled=labelled,
                        num_workers=num_workers)


def iterate_batches(dataset, batch_size: int, *, device: torch.device | str = "cpu",
                    transform: Transform | None = None, shard: tuple[int, int] = (0, 1), sort_by_length: bool = False):
    """Ordered, finite pass over ``dataset`` for evaluation; ``shard=(rank, world)`` splits it across ranks. Sets of
    variable-length samples may be visited shortest first (``sort_by_length``: less padding; the order changes no sum)."""
    rank, world = shard
    index = torch.arange(rank, len(dataset), world)
    lengths = getattr(dataset, "lengths", None)
    if sort_by_length and lengths is not None:
        index = index[torch.sort(lengths[index], stable=True).indices]
    for start in range(0, len(index), batch_size):
        rows = index[start : start + batch_size]
        x = to_device(dataset.batch(rows), device)
        y = None if dataset.y is None else dataset.y[rows].to(device, non_blocking=True)
        yield Batch(transform(x) if transform else x, y, _targets(dataset, rows, device))
