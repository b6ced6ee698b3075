"""T-GAT-UNet: shapes, no peeking at hidden values, gradient checkpointing."""

import pytest
import torch

from tgatunet.model.factory import build_model
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet, local_linear
from tgatunet.model.transformer import TransformerLayer, attention


def _model(**kw):
    torch.manual_seed(0)
    spec = ModelSpec(in_channels=5, num_classes=3, hidden_channels=16, attention_heads=2, dropout=0.0, **kw)
    return build_model(spec)


@pytest.mark.parametrize("T", [4, 17, 50])
@pytest.mark.parametrize("enc,dec,tr", [(1, 1, 1), (2, 3, 0), (3, 1, 2)])
def test_output_shapes(T, enc, dec, tr):
    model = _model(encoder_layers=enc, decoder_layers=dec, transformer_layers=tr)
    values = torch.randn(3, T, 5)
    recon, logits = model(values, torch.ones(3, T, 5, dtype=torch.bool))
    assert recon.shape == (3, T, 5)
    assert logits.shape == (3, 3)


@pytest.mark.parametrize("lite", [False, True])
def test_hidden_values_cannot_reach_the_output(lite):
    model = _model(lite=lite).eval()
    values = torch.randn(2, 20, 5)
    visible = torch.rand(2, 20, 5) > 0.4
    recon, logits = model(values, visible)
    changed = values.clone()
    changed[~visible] = 1e4
    recon2, logits2 = model(changed, visible)
    torch.testing.assert_close(recon, recon2)
    torch.testing.assert_close(logits, logits2)


def test_windows_of_a_batch_are_independent():
    model = _model().eval()
    values = torch.randn(4, 12, 5)
    visible = torch.ones(4, 12, 5, dtype=torch.bool)
    batch_recon, _ = model(values, visible)
    single_recon, _ = model(values[2:3], visible[2:3])
    torch.testing.assert_close(batch_recon[2:3], single_recon, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    values = torch.randn(3, 24, 5)
    visible = torch.rand(3, 24, 5) > 0.2
    grads = []
    for checkpointed in (False, True):
        model = _model(gradient_checkpoint=checkpointed, transformer_layers=2)
        recon, logits = model(values, visible)
        (recon.pow(2).mean() + logits.logsumexp(-1).mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, ckpt in zip(*grads):
        torch.testing.assert_close(plain, ckpt, atol=1e-6, rtol=0)


def test_training_after_inference_with_a_new_window_length():
    # The temporal graph of a length first seen under inference mode is cached; training
    # on that length afterwards must still be able to save it for backward.
    model = _model()
    values = torch.randn(2, 37, 5)
    visible = torch.ones(2, 37, 5, dtype=torch.bool)
    with torch.inference_mode():
        model.eval()(values, visible)
    recon, logits = model.train()(values, visible)
    (recon.sum() + logits.sum()).backward()


@pytest.mark.parametrize("T,kernel", [(20, 7), (5, 7), (9, 3)])
def test_local_path_is_the_replicate_padded_convolution(T, kernel):
    torch.manual_seed(1)
    conv = torch.nn.Conv1d(6, 3, kernel, padding=kernel // 2, padding_mode="replicate").double()
    x = torch.randn(2, T, 6, dtype=torch.float64)
    want = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(local_linear(conv, x), want, atol=1e-12, rtol=0)


def test_transformer_layer_is_torchs_pre_norm_layer():
    torch.manual_seed(2)
    D, H, ff = 16, 4, 24
    ref = torch.nn.TransformerEncoderLayer(D, H, ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
    ours = TransformerLayer(D, H, ff, dropout=0.0)
    ours.load_state_dict(ref.state_dict())  # the same parameter names
    x = torch.randn(3, 10, D, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, want = ours(x), ref(x_ref)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-5, msg=name)
    with torch.no_grad():  # eval: torch's fused fast path
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x), atol=1e-5, rtol=1e-5)



def test_attention_weight_dropout_keeps_the_expected_output():
    # On CPU the layer drops attention weights itself; averaged over masks it is attention without dropout.
    torch.manual_seed(3)
    q, k, v = torch.randn(3, 1, 2, 6, 4, dtype=torch.float64).unbind(0)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    draws = torch.stack([attention(q, k, v, 0.3) for _ in range(4000)])
    torch.testing.assert_close(draws.mean(0), want, atol=0.05, rtol=0)
    assert (draws != want).any()  # the weights were dropped
    torch.testing.assert_close(attention(q, k, v, 0.0), want)

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
        recon, logits = model(values, visible)
        (recon.pow(2).mean() + logits.logsumexp(-1).mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, ckpt in zip(*grads):
        torch.testing.assert_close(plain, ckpt, atol=1e-6, rtol=0)
