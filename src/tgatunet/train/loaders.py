"""The loaders of a training: batches of windows from memory, a store or the GPU, sharded under DDP."""

from __future__ import annotations

from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from tgatunet.config import Config
from tgatunet.data.prepared import collate_windows
from tgatunet.data.resident import IndexDataset
from tgatunet.data.store_windows import window_dataset
from tgatunet.data.training_inputs import TrainingInputs, TrainingWindowDataset
from tgatunet.hardware import training_device
from tgatunet.train.prepare import Data


def make_loader(data: Data, split: str, config: Config, shuffle: bool, shard: tuple[int, int] | None = None, inputs: TrainingInputs | None = None,
                resident: bool = False, cuda: bool | None = None) -> DataLoader:
    """Batches of ``batch_size`` windows, fetched a batch at a time.

    On CUDA, batches go through pinned memory (so the copy to the GPU overlaps compute) and,
    unless ``num_workers`` says otherwise, two worker processes prepare the next batches.

    Args:
        shard: ``(world_size, rank)`` under DDP: this process's share of the windows. Evaluation
            shares repeat no window (each counts once in the synced metrics); training shares are
            padded to equal length, and with fresh offsets split each epoch's draw.
        inputs: the dynamic need update's buffer, read by the training windows instead of ``data``.
        resident: the windows are on the device (:class:`DeviceWindows`): batches of indices only, no workers.
        cuda: training on CUDA (a training passes its plan's device; default: the config's training device).
    """
    if inputs is not None and split != "train":
        raise ValueError(f"only the training split has an input buffer, not '{split}'")
    cuda = training_device(config.performance.accelerator).kind == "cuda" if cuda is None else cuda
    workers = config.performance.num_workers
    workers = (2 if cuda and not resident else 0) if workers is None else workers
    if resident:
        dataset = IndexDataset(data, split)
    elif inputs is not None:
        dataset = TrainingWindowDataset(data, inputs)
    else:
        dataset = window_dataset(data, split)
    sampler = None
    if split == "train" and shuffle and len(dataset) > data.epoch_windows:  # fresh offsets: a new draw each epoch
        sampler, shuffle = RandomSampler(dataset, num_samples=data.epoch_windows), False
    if shard is not None:
        world, rank = shard
        if split != "train":
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        elif sampler is not None:  # every process draws the same subset (same seed), then takes its share
            sampler = DistributedSamplerWrapper(sampler, num_replicas=world, rank=rank, shuffle=False)
        else:
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=config.training.seed)
        shuffle = False
    # CUDA graphs replay one shape: a compiled CUDA training step never sees the partial last batch.
    drop_last = split == "train" and cuda and config.performance.compile
    return DataLoader(dataset, batch_size=config.training.batch_size, shuffle=shuffle, sampler=sampler, collate_fn=collate_windows,
                      drop_last=drop_last, num_workers=workers, persistent_workers=workers > 0, pin_memory=cuda and not resident)
