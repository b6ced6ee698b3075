"""The batched GAT layer computes what torch_geometric's GATConv computes on the same graph."""

import pytest
import torch

from tgatunet.graph.temporal import neighbors_to_edge_index, temporal_neighbors
from tgatunet.model.gat import BandedSum, BatchedGATConv

pyg = pytest.importorskip("torch_geometric.nn")


def _pyg_twin(ours: BatchedGATConv, in_channels: int) -> torch.nn.Module:
    twin = pyg.GATConv(
        in_channels, ours.out_channels, heads=ours.heads, concat=ours.concat, add_self_loops=False
    )
    with torch.no_grad():
        twin.lin.weight.copy_(ours.lin.weight)
        twin.att_src.copy_(ours.att_src)
        twin.att_dst.copy_(ours.att_dst)
        twin.bias.copy_(ours.bias)
    return twin.double()


def _batch_edge_index(index: torch.Tensor, valid: torch.Tensor, batch: int, steps: int) -> torch.Tensor:
    """Disjoint union of per-window graphs, as PyG batches them."""
    if index.dim() == 2:
        index, valid = index.expand(batch, -1, -1), valid.expand(batch, -1, -1)
    return torch.cat([neighbors_to_edge_index(index[b], valid[b]) + b * steps for b in range(batch)], dim=1)


@pytest.mark.parametrize("heads,concat,time_k", [(1, True, 1), (3, True, 2), (4, False, 3), (2, False, 1)])
def test_matches_pyg_on_temporal_graph(heads, concat, time_k):
    torch.manual_seed(0)
    B, T, F_in, F_out = 3, 17, 5, 4
    ours = BatchedGATConv(F_in, F_out, heads=heads, concat=concat).double()
    with torch.no_grad():
        ours.bias.normal_()  # a zero bias would not test the bias path
    twin = _pyg_twin(ours, F_in)
    x = torch.randn(B, T, F_in, dtype=torch.float64)
    index, valid = temporal_neighbors(T, time_k)
    got = ours(x, (index, valid))
    want = twin(x.reshape(B * T, F_in), _batch_edge_index(index, valid, B, T)).view(B, T, -1)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(x, time_k), want, atol=1e-5, rtol=0)  # the banded path


def test_matches_pyg_with_per_window_neighbours_in_float32():
    torch.manual_seed(1)
    B, T, K, F_in, F_out, heads = 2, 11, 4, 6, 3, 2
    ours = BatchedGATConv(F_in, F_out, heads=heads)
    twin = _pyg_twin(ours, F_in).float()
    x = torch.randn(B, T, F_in)
    index = torch.randint(0, T, (B, T, K))
    index[..., 0] = torch.arange(T)  # self loop, so no node is left without an edge
    valid = torch.rand(B, T, K) > 0.3
    valid[..., 0] = True
    # PyG softmax treats repeated edges as separate terms; so does the table.
    got = ours(x, (index, valid))
    want = twin(x.reshape(B * T, F_in), _batch_edge_index(index, valid, B, T)).view(B, T, -1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("heads,time_k", [(1, 1), (2, 2)])
def test_gradients_match_pyg_on_temporal_graph(heads, time_k):
    torch.manual_seed(2)
    B, T, F_in, F_out = 2, 9, 5, 3
    ours = BatchedGATConv(F_in, F_out, heads=heads).double()
    twin = _pyg_twin(ours, F_in)
    x = torch.randn(B, T, F_in, dtype=torch.float64, requires_grad=True)
    x_twin = x.detach().clone().requires_grad_()
    index, valid = temporal_neighbors(T, time_k)
    g = torch.randn(B, T, heads * F_out, dtype=torch.float64)
    (ours(x, time_k) * g).sum().backward()  # the banded path
    (twin(x_twin.reshape(B * T, F_in), _batch_edge_index(index, valid, B, T)).view(B, T, -1) * g).sum().backward()
    torch.testing.assert_close(x.grad, x_twin.grad, atol=1e-10, rtol=0)
    for name in ("att_src", "att_dst", "bias"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(twin, name).grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(ours.lin.weight.grad, twin.lin.weight.grad, atol=1e-10, rtol=0)


def test_banded_and_gathered_paths_agree():
    # The temporal graph given by its radius takes the banded path; as a table, the gather path.
    torch.manual_seed(3)
    B, T = 3, 10
    layer = BatchedGATConv(4, 3, heads=2).double()
    x = torch.randn(B, T, 4, dtype=torch.float64)
    banded = layer(x, 2)
    gathered = layer(x, temporal_neighbors(T, 2))
    torch.testing.assert_close(banded, gathered, atol=1e-12, rtol=0)


@pytest.mark.parametrize("T,radius", [(7, 1), (5, 2), (2, 3)])
def test_banded_sum_gradients(T, radius):
    torch.manual_seed(4)
    alpha = torch.rand(2, T, 2 * radius + 1, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, T, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(BandedSum.apply, (alpha, h))
