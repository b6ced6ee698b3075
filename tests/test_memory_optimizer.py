"""The memory optimizer: batch choice, micro-batches with the batch's gradient, out-of-memory recovery."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import lightning.pytorch as pl
import pytest
import torch

from tgatunet.config import config_from_dict
from tgatunet.data.prepared import WindowDataset, prepare_data
from tgatunet.errors import RunError
from tgatunet.train.loaders import make_loader
from tgatunet.train.memory_optimizer import (
    MemoryModel,
    MemoryOptimizer,
    choose_micro_batch,
    plan_memory,
)
from tgatunet.train.micro_batch import MicroBatches
from tgatunet.train.run import build_module, train
from tgatunet.infer.rundir import RunDir

# --- choosing the size from a fake memory model ------------------------------------


class FakeMemory:
    """``peak(b) = fixed + per_window * b + curve * b**2`` bytes, counting the sizes measured."""

    def __init__(self, fixed: int, per_window: int, curve: float = 0.0) -> None:
        self.fixed, self.per_window, self.curve = fixed, per_window, curve
        self.calls: list[int] = []

    def __call__(self, size: int) -> int:
        self.calls.append(size)
        return int(self.fixed + self.per_window * size + self.curve * size**2)


def test_largest_size_under_the_target_is_chosen():
    memory = FakeMemory(fixed=1000, per_window=100)
    size, model, measured = choose_micro_batch(memory, limit=4000, batch_size=64)
    assert size == 30  # 1000 + 100 * 30 = 4000 <= limit < 1000 + 100 * 31
    assert model == MemoryModel(fixed=1000, per_window=100)
    assert memory.calls == [4, 8, 30]  # two probes, then the choice verified
    assert measured[30] == 4000


def test_batch_that_fits_is_kept_whole():
    size, _, _ = choose_micro_batch(FakeMemory(1000, 100), limit=10**9, batch_size=16)
    assert size == 16


def test_an_optimistic_line_is_corrected_by_measuring_the_choice():
    # Memory grows faster than the line through the two small probes predicts.
    memory = FakeMemory(fixed=1000, per_window=100, curve=5.0)
    size, _, measured = choose_micro_batch(memory, limit=10_000, batch_size=1000)
    assert measured[size] <= 10_000
    assert size == 33  # the true largest: 1000 + 100 * 33 + 5 * 33**2 = 9745, and 34 needs 10180


def test_tiny_batches_are_probed_within_the_batch():
    memory = FakeMemory(fixed=10, per_window=10)
    size, _, _ = choose_micro_batch(memory, limit=10**6, batch_size=3)
    assert size == 3 and max(memory.calls) <= 3


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(RunError, match="memory_budget_gb"):
        choose_micro_batch(FakeMemory(fixed=10_000, per_window=10), limit=5000, batch_size=32)


def test_memory_model_max_size():
    model = MemoryModel.through({4: 1400, 8: 1800})
    assert (model.fixed, model.per_window) == (1000, 100)
    assert model.max_size(4050) == 30
    assert model.max_size(999) == 0


# --- micro-batches: same gradient, out-of-memory recovery ----------------------------------


@pytest.fixture
def module_and_batch(dataset):
    cfg = config_from_dict({**dataset["config"], "dropout": 0.0})
    data = prepare_data(cfg)
    torch.manual_seed(0)
    module = build_module(cfg, data)
    batch = WindowDataset(data, "train").__getitems__(list(range(10)))
    visible, targets = module.inputs(batch, torch.Generator().manual_seed(1))
    return module, batch, (visible, targets)


def _grads(module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


def test_micro_batches_give_the_whole_batch_gradient(module_and_batch):
    module, batch, inputs = module_and_batch
    whole = module.losses(batch, *inputs)
    whole["loss"].backward()
    expected = _grads(module)
    module.zero_grad(set_to_none=True)

    totals = MicroBatches(3).accumulate(
        10, lambda rows: module.losses(batch, *inputs, rows), lambda loss: loss.backward(), module.zero_grad, step=0
    )
    for got, want in zip(_grads(module), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for key in ("loss", "recon", "cls_loss", "correct"):
        torch.testing.assert_close(totals[key], whole[key].detach(), rtol=1e-5, atol=1e-6)


def test_out_of_memory_retries_the_step_with_half_the_size():
    seen: list[range] = []

    def contribution(rows: slice) -> dict[str, torch.Tensor]:
        if rows.stop - rows.start > 3:
            raise MemoryError("injected")
        seen.append(range(rows.start, rows.stop))
        return {"loss": torch.tensor(float(rows.stop - rows.start), requires_grad=True)}

    resets = []
    micro = MicroBatches(None, recover_out_of_memory=True)
    totals = micro.accumulate(12, contribution, lambda loss: None, lambda: resets.append(1), step=5)
    assert sorted(i for r in seen for i in r) == list(range(12))  # every window once
    assert totals["loss"].item() == 12
    assert micro.size == 3 and len(resets) == 2  # 12 -> 6 -> 3
    assert [(c.step, c.reason, c.old, c.new) for c in micro.changes] == [
        (5, "out_of_memory", 12, 6),
        (5, "out_of_memory", 6, 3),
    ]
    assert micro.summary()["steps_by_micro_batch_size"] == {"3": 1}


def test_out_of_memory_propagates_without_the_optimizer():
    def contribution(rows):
        raise MemoryError("injected")

    with pytest.raises(MemoryError):
        MicroBatches().accumulate(4, contribution, lambda loss: None, lambda: None, step=0)
    with pytest.raises(RunError, match="single window"):
        MicroBatches(1, recover_out_of_memory=True).accumulate(4, contribution, lambda loss: None, lambda: None, step=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_cuda_out_of_memory_is_recovered():
    device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    weight = torch.ones(1, device=device, requires_grad=True)
    chunk = 2**24  # floats per window: 64 MiB
    seen: list[int] = []

    def contribution(rows: slice) -> dict[str, torch.Tensor]:
        n = rows.stop - rows.start
        # Its share of the mean over all 32 windows; n * 64 MiB of ones, n * 64 MiB of product.
        loss = (weight * torch.ones(n, chunk, device=device)).sum() / (32 * chunk)
        seen.extend(range(rows.start, rows.stop))
        return {"loss": loss}

    def reset() -> None:
        weight.grad = None
        seen.clear()

    # This process may hold 1 GiB more than now: 32 windows (4 GiB) and 16 (2 GiB) do not fit.
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved(device) + 2**30) / total, device)
    try:
        micro = MicroBatches(None, recover_out_of_memory=True)
        micro.accumulate(32, contribution, lambda loss: loss.backward(), reset, step=0)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    assert [(c.reason, c.old) for c in micro.changes][0] == ("out_of_memory", 32)
    assert micro.size <= 8
    assert sorted(seen) == list(range(32))
    torch.testing.assert_close(weight.grad, torch.ones(1, device=device))  # d mean(w * 1) / dw


class InjectOutOfMemory(pl.Callback):
    """From global step ``at_step`` on, the model raises MemoryError for more than ``limit`` windows.

    Records, per epoch, the training windows whose forward succeeded (matched by their values
    to the batch's windows), and the batches the loader gave.
    """

    def __init__(self, at_step: int, limit: int) -> None:
        self.at_step, self.limit = at_step, limit
        self.seen: dict[int, list[int]] = defaultdict(list)
        self.loaded: dict[int, list[int]] = defaultdict(list)
        self.batch_sizes: list[int] = []
        self._pending: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module):
        original = pl_module.model.forward

        def forward(values, visible, neighbors=None):
            if trainer.training and trainer.global_step >= self.at_step and len(values) > self.limit:
                raise MemoryError("injected out of memory")
            out = original(values, visible, neighbors)
            if trainer.training:
                self._pending.append(values.detach().clone())
            return out

        pl_module.model.forward = forward

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._pending = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        epoch = trainer.current_epoch
        self.loaded[epoch] += batch["index"].tolist()
        self.batch_sizes.append(len(batch["index"]))
        for values in self._pending:
            match = (values[:, None] == batch["values"][None]).flatten(2).all(-1)  # [rows, B]
            assert (match.sum(1) == 1).all()
            self.seen[epoch] += batch["index"][match.float().argmax(1)].tolist()


def test_out_of_memory_mid_epoch_is_recovered_and_every_window_seen_once(dataset):
    fixed = {**dataset["config"], "fresh_offsets": False}  # the same windows every epoch, to count them
    path = dataset["write"]({**fixed, "use_memory_optimizer": True, "epochs": 2})
    windows = len(prepare_data(config_from_dict(fixed)).windows["train"])
    steps_per_epoch = -(-windows // 8)
    at_step = steps_per_epoch + 2  # the third step of the second epoch
    inject = InjectOutOfMemory(at_step=at_step, limit=4)
    run = train(path, callbacks=[inject], progress_bar=False)

    for epoch in (0, 1):
        assert sorted(inject.loaded[epoch]) == list(range(windows))
        assert sorted(inject.seen[epoch]) == list(range(windows)), f"epoch {epoch}: a window skipped or repeated"
    metrics = json.loads(RunDir(run.root).metrics_path.read_text())
    assert metrics["train"]["epochs_completed"] == 2
    optimizer = metrics["memory"]["optimizer"]
    assert optimizer["plan"]["micro_batch_size"] == 8
    assert optimizer["changes"] == [{"step": at_step, "reason": "out_of_memory", "old": 8, "new": 4}]
    used = Counter(str(min(8 if step < at_step else 4, size)) for step, size in enumerate(inject.batch_sizes))
    assert optimizer["steps_by_micro_batch_size"] == dict(used)
    assert metrics["train"]["micro_batch_size"] == 4
    assert torch.load(run.last_checkpoint, weights_only=False)["epoch"] == 1


def test_memory_crossing_the_target_lowers_the_size_for_the_next_steps(dataset):
    cfg = config_from_dict({**dataset["config"], "use_memory_optimizer": True, "epochs": 1})
    data = prepare_data(cfg)
    readings = iter([0.0, 0.0, 1.5, 1.5, 1.5, 2.0] + [0.0] * 100)  # in units of the limit
    train_windows = WindowDataset(data, "train")
    plan = plan_memory(build_module(cfg, data, "cpu"), train_windows, cfg, torch.device("cpu"))
    optimizer = MemoryOptimizer(plan, usage=lambda size: int(next(readings) * plan.limit))
    # The plan's micro-batches go to the module's constructor, as training gives them.
    module = build_module(cfg, data, "cpu", micro_batches=MicroBatches(plan.micro_batch_size, recover_out_of_memory=True))
    trainer = pl.Trainer(
        accelerator="cpu",  # the CPU's reading rule (CUDA releases its cache and reads afresh)
        max_steps=7,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[optimizer],
    )
    trainer.fit(module, train_dataloaders=make_loader(data, "train", cfg, shuffle=True))

    changes = module.micro_batches.changes
    # Lowered at the first reading above the target, not again while the reading stays (the CPU
    # allocator keeps freed memory), and again when it grows further.
    assert [(c.step, c.reason) for c in changes] == [(3, "memory_target"), (6, "memory_target")]
    assert 4 <= changes[0].new < changes[0].old == 8  # never more than halved at once
    assert changes[0].new // 2 <= changes[1].new < changes[1].old == changes[0].new
    steps = module.micro_batches.steps_by_size
    assert steps[8] == 3 and steps[changes[0].new] == 3 and steps[changes[1].new] == 1
