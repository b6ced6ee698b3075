"""T-GAT-UNet: shapes, no peeking at hidden values, gradient checkpointing."""

import pytest
import torch
import torch.nn.functional as F

from tgatunet.model.tgat_unet import ModelSpec, TGATUNet
from tgatunet.model.transformer import TransformerLayer


def _model(**kw):
    torch.manual_seed(0)
    spec = ModelSpec(in_channels=5, num_classes=3, hidden_channels=16, attention_heads=2, dropout=0.0, **kw)
    return TGATUNet(spec)


@pytest.mark.parametrize("T", [4, 17, 50])
@pytest.mark.parametrize("enc,dec,tr", [(1, 1, 1), (2, 3, 0), (3, 1, 2)])
def test_output_shapes(T, enc, dec, tr):
    model = _model(encoder_layers=enc, decoder_layers=dec, transformer_layers=tr)
    values = torch.randn(3, T, 5)
    recon, logits, _ = model(values, torch.ones(3, T, 5, dtype=torch.bool))
    assert recon.shape == (3, T, 5)
    assert logits.shape == (3, 3)


@pytest.mark.parametrize("lite", [False, True])
def test_hidden_values_cannot_reach_the_output(lite):
    model = _model(lite=lite).eval()
    values = torch.randn(2, 20, 5)
    visible = torch.rand(2, 20, 5) > 0.4
    recon, logits, _ = model(values, visible)
    changed = values.clone()
    changed[~visible] = 1e4
    recon2, logits2, _ = model(changed, visible)
    torch.testing.assert_close(recon, recon2)
    torch.testing.assert_close(logits, logits2)


def test_windows_of_a_batch_are_independent():
    model = _model().eval()
    values = torch.randn(4, 12, 5)
    visible = torch.ones(4, 12, 5, dtype=torch.bool)
    batch_recon, _, _ = model(values, visible)
    single_recon, _, _ = model(values[2:3], visible[2:3])
    torch.testing.assert_close(batch_recon[2:3], single_recon, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    values = torch.randn(3, 24, 5)
    visible = torch.rand(3, 24, 5) > 0.2
    grads = []
    for checkpointed in (False, True):
        model = _model(gradient_checkpoint=checkpointed, transformer_layers=2)
        recon, logits, _ = model(values, visible)
        (recon.pow(2).mean() + logits.logsumexp(-1).mean()).backward()
        grads.append([p.grad.clone() for p in model.network_parameters()])
    for plain, ckpt in zip(*grads):
        torch.testing.assert_close(plain, ckpt, atol=1e-6, rtol=0)


def _torch_twin(ours: TransformerLayer, dim: int, heads: int, ff: int) -> torch.nn.TransformerEncoderLayer:
    """torch's pre-norm layer with ``ours``' weights (key/value heads repeated for every query head)."""
    ref = torch.nn.TransformerEncoderLayer(dim, heads, ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
    d, G = dim // heads, ours.kv_heads
    w_q, w_k, w_v = ours.qkv.weight.split([dim, G * d, G * d])
    b_q, b_k, b_v = ours.qkv.bias.split([dim, G * d, G * d])
    r = heads // G
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([w_q, w_k.view(G, 1, d, dim).expand(G, r, d, dim).reshape(dim, dim),
                                                      w_v.view(G, 1, d, dim).expand(G, r, d, dim).reshape(dim, dim)]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([b_q, b_k.view(G, 1, d).expand(G, r, d).reshape(-1),
                                                    b_v.view(G, 1, d).expand(G, r, d).reshape(-1)]))
        ref.self_attn.out_proj.load_state_dict(ours.out.state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.norm2.load_state_dict(ours.norm2.state_dict())
        ref.linear1.load_state_dict(ours.ff[0].state_dict())
        ref.linear2.load_state_dict(ours.ff[3].state_dict())
    return ref


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_transformer_layer_is_torchs_pre_norm_layer(kv_heads):
    # Multi-query attention is multi-head attention whose key/value heads are all equal.
    torch.manual_seed(2)
    D, H, ff = 16, 4, 24
    ours = TransformerLayer(D, H, ff, dropout=0.0, kv_heads=kv_heads)
    ref = _torch_twin(ours, D, H, ff)
    x = torch.randn(3, 10, D, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, want = ours(x), ref(x_ref)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # eval: torch's fused fast path
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x), atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_with_dropout_gives_the_same_gradients():
    # Checkpointing restores the RNG state before recomputing, so the dropout masks repeat.
    values = torch.randn(3, 24, 5)
    visible = torch.rand(3, 24, 5) > 0.2
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        spec = ModelSpec(in_channels=5, num_classes=3, hidden_channels=16, attention_heads=2, dropout=0.2,
                         gradient_checkpoint=checkpointed)
        model = TGATUNet(spec)
        torch.manual_seed(1)
        recon, logits, _ = model(values, visible)
        (recon.pow(2).mean() + logits.logsumexp(-1).mean()).backward()
        grads.append([p.grad.clone() for p in model.network_parameters()])
    for plain, ckpt in zip(*grads):
        torch.testing.assert_close(plain, ckpt, atol=1e-6, rtol=0)


def test_pool_and_upsample_are_avg_pool1d_and_nearest_interpolate():
    from tgatunet.model.tgat_unet import pool_pairs, upsample_to

    h = torch.randn(2, 11, 4)
    pooled = pool_pairs(h)
    torch.testing.assert_close(pooled, F.avg_pool1d(h.transpose(1, 2), 2, ceil_mode=True).transpose(1, 2))
    for steps in (6, 11, 12, 23, 40):
        want = F.interpolate(pooled.transpose(1, 2), size=steps, mode="nearest").transpose(1, 2)
        torch.testing.assert_close(upsample_to(pooled, steps), want)


def test_selective_checkpointing_gives_the_same_gradients_and_keeps_less_than_none():
    values, visible = torch.randn(3, 24, 5), torch.rand(3, 24, 5) > 0.2
    grads, saved = [], []
    for checkpointed, mode in ((False, "full"), (True, "selective")):
        torch.manual_seed(0)
        model = _model(gradient_checkpoint=checkpointed, checkpoint_mode=mode)
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            recon, logits, _ = model(values, visible)
        (recon.pow(2).mean() + logits.logsumexp(-1).mean()).backward()
        grads.append([p.grad.clone() for p in model.network_parameters()])
        saved.append(sum(sizes))
    for plain, ckpt in zip(*grads):
        torch.testing.assert_close(plain, ckpt, atol=1e-6, rtol=0)
    assert saved[1] < saved[0]
