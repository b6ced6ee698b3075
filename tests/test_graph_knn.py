"""The knn graph builder: what it links, what it may not see, and that the batched GAT consumes it."""

import numpy as np
import pytest
import torch
from conftest import assert_equally_near_neighbours

from tgatunet.graph.knn import KnnGraph
from tgatunet.graph.temporal import neighbors_to_edge_index, temporal_neighbors
from tgatunet.model.gat import BatchedGATConv
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet


def _reference(values: np.ndarray, visible: np.ndarray, k: int, time_k: int) -> list[list[int]]:
    """Per-step knn sets by explicit loops over pairs (slow, obviously right)."""
    T = len(values)
    result = []
    for t in range(T):
        scored = []
        for j in range(T):
            shared = visible[t] & visible[j]
            if abs(t - j) <= time_k or not shared.any():
                continue
            scored.append((((values[t] - values[j])[shared] ** 2).mean(), j))
        result.append([j for _, j in sorted(scored)[:k]])
    return result


def _windows(B=3, T=23, C=4, seed=0, p_visible=0.8):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(B, T, C, generator=gen)
    visible = torch.rand(B, T, C, generator=gen) < p_visible
    return values, visible


@pytest.mark.parametrize("k,time_k", [(1, 1), (4, 1), (3, 3)])
def test_links_the_nearest_visible_steps_outside_the_temporal_range(k, time_k):
    values, visible = _windows()
    index, valid = KnnGraph(k, time_k).build(values, visible)
    T = values.shape[1]
    assert index.shape == valid.shape == (3, T, 2 * time_k + 1 + k)
    t_index, t_valid = temporal_neighbors(T, time_k)
    for b in range(3):
        torch.testing.assert_close(index[b, :, : 2 * time_k + 1], t_index)
        assert torch.equal(valid[b, :, : 2 * time_k + 1], t_valid)
        want = _reference(values[b].double().numpy(), visible[b].numpy(), k, time_k)
        for t in range(T):
            got = index[b, t, 2 * time_k + 1 :][valid[b, t, 2 * time_k + 1 :]].tolist()
            assert got == want[t], (b, t)


def test_hidden_values_do_not_change_the_graph():
    values, visible = _windows(seed=1)
    graph = KnnGraph(4, 1)
    changed = values.clone()
    changed[~visible] = torch.randn(int((~visible).sum())) * 100
    for got, want in zip(graph.build(changed, visible), graph.build(values, visible)):
        assert torch.equal(got, want)


def test_a_step_with_nothing_visible_keeps_only_its_temporal_edges():
    values, visible = _windows(B=1, p_visible=1.0)
    visible[0, 5] = False
    index, valid = KnnGraph(3, 1).build(values, visible)
    assert valid[0, 5].tolist() == [True, True, True, False, False, False]
    # ... and no other step picks it.
    assert not (index[0, :, 3:][valid[0, :, 3:]] == 5).any()


def test_each_edge_appears_once():
    values, visible = _windows(B=2, T=40)
    index, valid = KnnGraph(6, 2).build(values, visible)
    for b in range(2):
        for t in range(40):
            # Temporal slots at the window's edges are clamped duplicates, but invalid.
            linked = index[b, t][valid[b, t]].tolist()
            assert len(linked) == len(set(linked))


def test_chunking_gives_the_same_graph():
    values, visible = _windows(B=7, T=30)
    whole = KnnGraph(4, 1).build(values, visible)
    chunked = KnnGraph(4, 1, chunk_elements=2 * 30 * 30).build(values, visible)  # two windows per chunk
    for got, want in zip(chunked, whole):
        assert torch.equal(got, want)


def test_autocast_does_not_change_the_graph():
    values, visible = _windows(B=2, T=30)
    graph = KnnGraph(4, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = graph.build(values, visible)
    for got, want in zip(mixed, graph.build(values, visible)):
        assert torch.equal(got, want)


def test_batched_gat_matches_pyg_on_a_knn_graph():
    pyg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(2)
    B, T, F_in, F_out, heads = 3, 19, 5, 4, 2
    values, visible = _windows(B=B, T=T, C=F_in, seed=3)
    index, valid = KnnGraph(4, 1).build(values, visible)
    ours = BatchedGATConv(F_in, F_out, heads=heads).double()
    with torch.no_grad():
        ours.bias.normal_()
    twin = pyg.GATConv(F_in, F_out, heads=heads, add_self_loops=False).double()
    with torch.no_grad():
        twin.lin.weight.copy_(ours.lin.weight)
        twin.att_src.copy_(ours.att_src)
        twin.att_dst.copy_(ours.att_dst)
        twin.bias.copy_(ours.bias)
    x = torch.randn(B, T, F_in, dtype=torch.float64)
    edge_index = torch.cat([neighbors_to_edge_index(index[b], valid[b]) + b * T for b in range(B)], dim=1)
    got = ours(x, (index, valid))
    want = twin(x.reshape(B * T, F_in), edge_index).view(B, T, -1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def _model():
    torch.manual_seed(0)
    spec = ModelSpec(in_channels=4, num_classes=3, hidden_channels=16, attention_heads=2, dropout=0.0)
    return TGATUNet(spec).eval()


def test_the_model_uses_the_knn_graph_at_full_resolution():
    model = _model()
    values, visible = _windows(B=2, T=24)
    neighbors = KnnGraph(4, 1).build(values, visible)
    recon, logits, _ = model(values, visible, neighbors)
    assert recon.shape == (2, 24, 4) and logits.shape == (2, 3)
    plain, _, _ = model(values, visible)
    assert not torch.allclose(recon, plain)
    # A temporal table given as neighbors is the default graph.
    temporal = tuple(t.expand(2, -1, -1) for t in temporal_neighbors(24, 1))
    torch.testing.assert_close(model(values, visible, temporal)[0], plain)


def test_hidden_values_cannot_reach_the_output_through_the_knn_graph():
    model = _model()
    values, visible = _windows(B=2, T=24, seed=5, p_visible=0.6)
    graph = KnnGraph(4, 1)
    recon, logits, _ = model(values, visible, graph.build(values, visible))
    changed = values.clone()
    changed[~visible] = 1e4
    recon2, logits2, _ = model(changed, visible, graph.build(changed, visible))
    torch.testing.assert_close(recon, recon2)
    torch.testing.assert_close(logits, logits2)


def test_equally_near_neighbours_accepts_reordered_slots_and_rejects_a_farther_one():
    # What the CUDA tests compare with: a device may break near ties its own way, never pick a farther step.
    values, visible = _windows(B=2, T=16)
    graph = KnnGraph(3, 1)
    index, valid = graph.build(values, visible)
    reordered = torch.cat([index[..., :3], index[..., 3:].flip(-1)], dim=-1)
    assert_equally_near_neighbours((reordered, valid), (index, valid), values, visible, time_k=1)
    farther = index.clone()
    # Step 0's nearest knn neighbour replaced by a step outside its table: a farther one.
    farther[0, 0, 3] = next(t for t in range(15, 2, -1) if t not in index[0, 0].tolist())
    with pytest.raises(AssertionError):
        assert_equally_near_neighbours((farther, valid), (index, valid), values, visible, time_k=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_graph_built_on_cuda_equals_the_cpu_one():
    values, visible = _windows(B=4, T=64)
    graph = KnnGraph(4, 2)
    on_gpu = graph.build(values.cuda(), visible.cuda())
    assert on_gpu[0].is_cuda and on_gpu[1].is_cuda
    assert_equally_near_neighbours(on_gpu, graph.build(values, visible), values, visible, time_k=2)


def test_a_knn_graph_that_cannot_fit_the_window_is_a_config_error(dataset):
    from tgatunet.config import config_from_dict
    from tgatunet.errors import ConfigError

    with pytest.raises(ConfigError, match="graph_knn"):
        config_from_dict({**dataset["config"], "graph_type": "knn", "graph_knn": 14, "time_k": 1})  # window 16
    config_from_dict({**dataset["config"], "graph_type": "knn", "graph_knn": 13, "time_k": 1})
    config_from_dict({**dataset["config"], "graph_knn": 14})  # only a knn graph needs the room
