"""The batched GAT layer computes what torch_geometric's GATConv computes on the same graph."""

import pytest
import torch

from tgatunet.graph.temporal import band_radius, neighbors_to_edge_index, temporal_neighbors
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
    got = ours(x, index, valid)
    want = twin(x.reshape(B * T, F_in), _batch_edge_index(index, valid, B, T)).view(B, T, -1)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


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
    got = ours(x, index, valid)
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
    (ours(x, index, valid) * g).sum().backward()
    (twin(x_twin.reshape(B * T, F_in), _batch_edge_index(index, valid, B, T)).view(B, T, -1) * g).sum().backward()
    torch.testing.assert_close(x.grad, x_twin.grad, atol=1e-10, rtol=0)
    for name in ("att_src", "att_dst", "bias"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(twin, name).grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(ours.lin.weight.grad, twin.lin.weight.grad, atol=1e-10, rtol=0)


def test_banded_and_gathered_paths_agree():
    # The temporal table given per window (B, T, K) takes the gather path; shared, the banded one.
    torch.manual_seed(3)
    B, T = 3, 10
    layer = BatchedGATConv(4, 3, heads=2).double()
    x = torch.randn(B, T, 4, dtype=torch.float64)
    index, valid = temporal_neighbors(T, 2)
    banded = layer(x, index, valid)
    gathered = layer(x, index.expand(B, -1, -1), valid.expand(B, -1, -1))
    torch.testing.assert_close(banded, gathered, atol=1e-12, rtol=0)


@pytest.mark.parametrize("T,radius", [(7, 1), (5, 2), (2, 3)])
def test_banded_sum_gradients(T, radius):
    torch.manual_seed(4)
    alpha = torch.rand(2, T, 2 * radius + 1, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, T, 3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(BandedSum.apply, (alpha, h))
    assert torch.autograd.gradcheck(BandedSum.apply, (alpha, h, bias))


def test_band_radius_recognises_the_temporal_table_only():
    index, valid = temporal_neighbors(12, 2)
    assert band_radius(index, valid) == 2
    assert band_radius(index.clone(), valid.clone()) == 2  # equal values, not the cached tensors
    other = index.clone()
    other[3, 0] = 7
    assert band_radius(other, valid) is None
    assert band_radius(index.expand(2, -1, -1), valid.expand(2, -1, -1)) is None  # per-window tables
    assert band_radius(index[:, :4], valid[:, :4]) is None  # even degree


def test_the_banded_output_is_not_a_view_so_the_blocks_in_place_elu_is_not_copied_back():
    # An in-place op on a view makes autograd copy the whole base in the backward pass.
    layer = BatchedGATConv(8, 4, heads=2)
    x = torch.randn(3, 10, 8, requires_grad=True)
    index, valid = temporal_neighbors(10, 1)
    out = layer(x, index, valid, radius=1)
    assert out.shape == (3, 10, 8) and out._base is None
    out = torch.nn.functional.elu(out, inplace=True)
    assert "CopySlices" not in type(out.grad_fn).__name__
    out.sum().backward()
    assert x.grad is not None and layer.lin.weight.grad is not None
