"""The lightweight T-GAT-UNet and its layers: same contract as the standard model, fewer parameters."""

import pytest
import torch
import torch.nn.functional as F

from tgatunet.config import PRESETS
from tgatunet.graph.temporal import temporal_neighbors
from tgatunet.model.gat import BatchedGATConv
from tgatunet.model.lite_gat import LiteGATConv
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet
from tgatunet.model.transformer import TransformerLayer
from tgatunet.profiling import peak_memory_bytes


def _spec(**kw) -> ModelSpec:
    base = dict(in_channels=5, num_classes=3, hidden_channels=16, attention_heads=2, dropout=0.0)
    return ModelSpec(**{**base, **kw})


def _lite(**kw) -> TGATUNet:
    torch.manual_seed(0)
    return TGATUNet(_spec(lite=True, **kw))


def _preset_spec(preset: str, lite: bool) -> ModelSpec:
    keys = ("hidden_channels", "encoder_layers", "decoder_layers", "transformer_layers", "attention_heads")
    # The bundled BasicMotions data: 6 channels, 4 classes.
    return ModelSpec(in_channels=6, num_classes=4, lite=lite, **{k: PRESETS[preset][k] for k in keys})


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("T", [4, 17, 50])
@pytest.mark.parametrize("enc,dec,tr", [(1, 1, 1), (2, 3, 0), (3, 1, 2)])
def test_same_inputs_and_outputs_as_the_standard_model(T, enc, dec, tr):
    values = torch.randn(3, T, 5)
    visible = torch.rand(3, T, 5) > 0.3
    kw = dict(encoder_layers=enc, decoder_layers=dec, transformer_layers=tr)
    standard = TGATUNet(_spec(**kw))
    lite = TGATUNet(_spec(lite=True, **kw))
    for (want_recon, want_logits, _), (recon, logits, _) in [(standard(values, visible), lite(values, visible))]:
        assert recon.shape == want_recon.shape == (3, T, 5)
        assert logits.shape == want_logits.shape == (3, 3)
        assert recon.dtype == want_recon.dtype and logits.dtype == want_logits.dtype


@pytest.mark.parametrize("preset", ["medium", "high"])
def test_lite_has_40_to_60_percent_fewer_parameters_at_the_presets(preset):
    standard = _count(TGATUNet(_preset_spec(preset, lite=False)))
    lite = _count(TGATUNet(_preset_spec(preset, lite=True)))
    assert 0.40 <= 1 - lite / standard <= 0.60


def test_windows_of_a_batch_are_independent():
    model = _lite(encoder_layers=3).eval()
    values = torch.randn(4, 13, 5)
    visible = torch.ones(4, 13, 5, dtype=torch.bool)
    batch_recon, batch_logits, _ = model(values, visible)
    single_recon, single_logits, _ = model(values[2:3], visible[2:3])
    torch.testing.assert_close(batch_recon[2:3], single_recon, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_logits[2:3], single_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lite", [True, False])
def test_gradient_checkpointing_gives_the_same_gradients(lite):
    values = torch.randn(3, 24, 5)
    visible = torch.rand(3, 24, 5) > 0.2
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = TGATUNet(_spec(gradient_checkpoint=checkpointed, transformer_layers=2, encoder_layers=3, decoder_layers=3, lite=lite))
        recon, logits, _ = model(values, visible)
        (recon.pow(2).mean() + logits.logsumexp(-1).mean()).backward()
        grads.append([p.grad.clone() for p in model.network_parameters()])
    for plain, ckpt in zip(*grads):
        torch.testing.assert_close(plain, ckpt, atol=1e-6, rtol=0)


def test_full_resolution_neighbours_are_used():
    model = _lite().eval()
    values = torch.randn(2, 12, 5)
    visible = torch.ones(2, 12, 5, dtype=torch.bool)
    index, valid = temporal_neighbors(12, model.spec.time_k)
    table = (index.expand(2, -1, -1), valid.expand(2, -1, -1))
    # The temporal graph given as a table computes what the built-in temporal graph computes...
    torch.testing.assert_close(model(values, visible, table)[0], model(values, visible)[0], atol=1e-5, rtol=0)
    # ...and another graph changes the output.
    wider_index, wider_valid = temporal_neighbors(12, 3)
    other = (wider_index.expand(2, -1, -1), wider_valid.expand(2, -1, -1))
    assert not torch.allclose(model(values, visible, other)[0], model(values, visible)[0], atol=1e-4)


def _gat_twin(lite: LiteGATConv, in_channels: int) -> BatchedGATConv:
    """A GATConv whose heads all have the lite layer's value projection, with scores unfolded."""
    H, Fv = lite.heads, lite.out_channels
    twin = BatchedGATConv(in_channels, Fv, heads=H).to(lite.lin.weight.dtype)
    w_value, w_src, w_dst = lite.lin.weight.split([Fv, H, H], dim=0)  # [F, F_in], [H, F_in], [H, F_in]
    with torch.no_grad():
        twin.lin.weight.copy_(w_value.repeat(H, 1))
        # a_h . (W x) = s_h . x for every x: solve for a_h (W has full row rank here).
        pinv = torch.linalg.pinv(w_value.T)  # [F, F_in]
        twin.att_src.copy_((pinv @ w_src.T).T[None])
        twin.att_dst.copy_((pinv @ w_dst.T).T[None])
        twin.bias.copy_(lite.bias)
    return twin


@pytest.mark.parametrize("heads,time_k", [(1, 1), (2, 2), (4, 1)])
def test_lite_gat_is_gat_with_a_projection_shared_by_the_heads(heads, time_k):
    torch.manual_seed(0)
    B, T, F_in, Fv = 3, 15, 12, 6
    lite = LiteGATConv(F_in, Fv, heads=heads).double()
    # Scores must lie in the span of the value projection for the twin to express them.
    with torch.no_grad():
        w_value = lite.lin.weight[:Fv]
        lite.lin.weight[Fv:] = torch.randn(2 * heads, Fv, dtype=torch.float64) @ w_value
        lite.bias.normal_()
    twin = _gat_twin(lite, F_in)
    x = torch.randn(B, T, F_in, dtype=torch.float64)
    index, valid = temporal_neighbors(T, time_k)
    want = twin(x, (index, valid))
    torch.testing.assert_close(lite(x, time_k), want, atol=1e-10, rtol=0)  # banded path
    torch.testing.assert_close(lite(x, (index, valid)), want, atol=1e-10, rtol=0)  # table path


def test_lite_gat_per_window_table_matches_the_standard_layer():
    torch.manual_seed(2)
    B, T, K, F_in, Fv, H = 2, 9, 4, 6, 3, 2
    lite = LiteGATConv(F_in, Fv, heads=H).double()
    with torch.no_grad():
        lite.lin.weight[Fv:] = torch.randn(2 * H, Fv, dtype=torch.float64) @ lite.lin.weight[:Fv]
    twin = _gat_twin(lite, F_in)
    index = torch.randint(0, T, (B, T, K))
    valid = torch.rand(B, T, K) > 0.3
    valid[..., 0] = True
    x = torch.randn(B, T, F_in, dtype=torch.float64)
    torch.testing.assert_close(lite(x, (index, valid)), twin(x, (index, valid)), atol=1e-10, rtol=0)


@pytest.mark.parametrize("lite", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_bottleneck_attention_goes_through_sdpa(lite, training, monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    model = TGATUNet(_spec(transformer_layers=2, encoder_layers=2, dropout=0.1, lite=lite)).train(training)
    model(torch.randn(2, 16, 5), torch.ones(2, 16, 5, dtype=torch.bool))
    assert len(calls) == 2
    assert all(shape == (2, 2, 4, 8) for shape in calls)  # [B, H, T / 2^E, D / H]


def test_lite_attention_memory_grows_linearly_in_training():
    """No ``[B, H, T, T]`` score tensor: doubling T about doubles the peak, even with dropout on."""
    layer = TransformerLayer(32, 2, 48, dropout=0.1, kv_heads=1, attention_dropout=0.0).train()

    def peak(T: int) -> int:
        x = torch.randn(2, T, 32, requires_grad=True)
        return peak_memory_bytes(lambda: layer(x).sum().backward())

    peak(64)  # warm-up
    assert peak(1024) / peak(512) < 2.5


@pytest.mark.parametrize("lite", [True, False])
def test_checkpointed_blocks_keep_no_activations(lite):
    def saved_bytes(checkpointed: bool) -> int:
        torch.manual_seed(0)
        model = TGATUNet(_spec(gradient_checkpoint=checkpointed, encoder_layers=2, decoder_layers=2, lite=lite)).train()
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(2, 32, 5), torch.ones(2, 32, 5, dtype=torch.bool))
        return sum(sizes)

    assert saved_bytes(True) < saved_bytes(False)
