"""Read-only tensors, and the prepared data that validation and test windows read being one."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tgatunet.config import config_from_dict
from tgatunet.data.frozen import ReadOnlyError, ReadOnlyTensor, freeze
from tgatunet.data.prepared import WindowDataset, prepare_data


def _frozen():
    return freeze(torch.arange(12, dtype=torch.float32).reshape(4, 3))


def _iadd(t):
    t += 1


WRITES = {
    "setitem": lambda t: t.__setitem__(0, 1.0),
    "setitem by mask": lambda t: t.__setitem__(t > 3, 0.0),
    "augmented assignment": _iadd,
    "in-place method": lambda t: t.add_(1),
    "in-place on a slice": lambda t: t[1:].zero_(),
    "in-place on a view": lambda t: t.view(-1).fill_(0),
    "in-place on .data": lambda t: t.data.mul_(2),
    "in-place on .detach()": lambda t: t.detach().mul_(2),
    "in-place on a transpose": lambda t: t.T.neg_(),
    "copy_": lambda t: t.copy_(torch.zeros(4, 3)),
    "index_put_": lambda t: t.index_put_((torch.tensor([0]),), torch.tensor(3.0)),
    "out=": lambda t: torch.add(t, 1, out=t),
    "functional inplace=True": lambda t: F.relu(t, inplace=True),
    "functional inplace positional": lambda t: F.dropout(t, 0.5, True, True),
    "aten operator": lambda t: torch.ops.aten.add_.Tensor(t, torch.ones(4, 3)),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_every_kind_of_write_raises_and_changes_nothing(write):
    t = _frozen()
    before = t.clone()
    with pytest.raises(ReadOnlyError, match="read-only"):
        write(t)
    assert torch.equal(t, before)


def _unforeseen_write(t):
    """An operation whose name gives no hint that it writes (a stand-in for any the rules miss)."""
    if torch.overrides.has_torch_function_unary(t):
        return torch.overrides.handle_torch_function(_unforeseen_write, (t,), t)
    t.add_(1.0)


def test_a_write_no_rule_foresaw_still_raises():
    with pytest.raises(ReadOnlyError, match="wrote read-only data"):
        _unforeseen_write(_frozen())


@pytest.mark.parametrize(
    "numpy_view",
    [lambda t: t.numpy(), lambda t: np.asarray(t), lambda t: t[1:].numpy()],
    ids=["numpy", "asarray", "slice"],
)
def test_numpy_views_are_read_only(numpy_view):
    t = _frozen()
    with pytest.raises(ValueError, match="read-only"):
        numpy_view(t)[0, 0] = 7.0
    assert t[0, 0] == 0.0


def test_new_memory_is_an_ordinary_writable_tensor_and_views_stay_frozen():
    t = _frozen()
    for copy_ in (t[torch.tensor([0, 2])], t + 1, t.clone(), t.to(torch.float64), t[t > 3]):
        assert type(copy_) is torch.Tensor
        copy_.zero_()
    assert torch.equal(t, torch.arange(12, dtype=torch.float32).reshape(4, 3))
    for view in (t[1:], t.view(-1), t.detach(), t.T, *t.unbind(0), *t.split(2)):
        assert isinstance(view, ReadOnlyTensor)
    assert type(t.shape) is torch.Size and t.shape == (4, 3)
    assert type(t.max(dim=0).values) is torch.Tensor


def test_a_frozen_value_may_be_written_into_an_ordinary_tensor():
    target = torch.zeros(4, 3)
    target[1] = _frozen()[2]
    assert target[1].tolist() == [6.0, 7.0, 8.0]


def test_copies_of_a_frozen_tensor_stay_frozen():
    t = _frozen()
    for again in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
        assert isinstance(again, ReadOnlyTensor) and torch.equal(again, t)
        with pytest.raises(ReadOnlyError):
            again[0] = 1.0


def _prepared(dataset):
    return prepare_data(config_from_dict(dataset["config"]))


@pytest.mark.parametrize("split", ["val", "test"])
def test_writing_validation_or_test_inputs_raises(dataset, split):
    data = _prepared(dataset)
    start = int(data.windows[split].starts[0])
    rows = torch.from_numpy(data.rows(data.windows[split].starts[:1])[0])
    values, observed = data.values[rows].clone(), data.observed[rows].clone()
    with pytest.raises(ReadOnlyError):
        data.values[rows] = 0.0
    with pytest.raises(ReadOnlyError):
        data.observed[start : start + 4].fill_(False)
    with pytest.raises(ReadOnlyError):
        data.values[start] += 1.0
    with pytest.raises(ValueError, match="read-only"):
        data.values.numpy()[start] = 1.0
    # What a dataset hands out is a copy: writing it leaves the data as it was.
    item = WindowDataset(data, split)[0]
    item["values"].add_(100.0)
    item["observed"].fill_(False)
    assert torch.equal(data.values[rows], values) and torch.equal(data.observed[rows], observed)
