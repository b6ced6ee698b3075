"""Config-selected model options: the lite variant, torch.compile with its eager fallback, training with both."""

import pandas as pd
import pytest
import torch

from tgatunet.infer.predict import complete_run
from tgatunet.config import load_config
from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.model.compile import CPU_INFERENCE_OPTIONS, CompiledOrEager
from tgatunet.model.tgat_unet import TGATUNet
from tgatunet.evaluate.trained_run import load_run
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.run import train


def _module(dataset, **overrides) -> TGATUNetModule:
    config = load_config(dataset["write"]({**dataset["config"], **overrides}))
    return TGATUNetModule(config.flat(), ["a", "b", "c"], ["slow", "fast"], [[False, False, True]])


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 16, 3), torch.rand(2, 16, 3) > 0.3


@pytest.mark.parametrize("optimized", [False, True])
def test_use_optimized_model_selects_the_variant(dataset, optimized):
    module = _module(dataset, use_optimized_model=optimized)
    assert module.model.spec.lite is optimized and (module.model.fuse is None) is optimized
    assert module.compiled is None


def test_compile_key_wraps_the_model_and_keeps_the_state_dict(dataset):
    plain = _module(dataset)
    compiled = _module(dataset, compile=True)
    assert isinstance(compiled.compiled, CompiledOrEager)
    assert compiled.compiled.module is compiled.model
    assert compiled.state_dict().keys() == plain.state_dict().keys()


def test_compile_unsupported_at_wrap_time_falls_back_to_eager(dataset, monkeypatch):
    def refuse(model, **kwargs):
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", refuse)
    with pytest.warns(RuntimeWarning, match="not supported on this platform"):
        module = _module(dataset, compile=True).eval()
    assert module.compiled.compiled is None
    values, visible = _inputs()
    torch.testing.assert_close(module(values, visible)[0], module.model(values, visible)[0])


def test_compile_failing_on_first_call_falls_back_to_eager_once(dataset, monkeypatch):
    calls = []

    def broken_compile(model, **kwargs):
        def run(*args, **kw):
            calls.append(1)
            raise torch._dynamo.exc.InternalTorchDynamoError("simulated backend failure")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    module = _module(dataset, compile=True).eval()
    values, visible = _inputs()
    with pytest.warns(RuntimeWarning, match="simulated backend failure"):
        recon, logits, _ = module(values, visible)
    torch.testing.assert_close(recon, module.model(values, visible)[0])
    module(values, visible)  # eager from now on: the compiled path is not tried again
    assert calls == [1]


def test_a_genuine_model_error_is_not_hidden_by_the_fallback(dataset, monkeypatch):
    def tracing_compile(model, **kwargs):
        def run(*args, **kw):
            raise torch._dynamo.exc.TorchRuntimeError("shape mismatch while tracing")

        return run

    monkeypatch.setattr(torch, "compile", tracing_compile)
    module = _module(dataset, compile=True)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError):
        module(torch.randn(2, 16, 4), torch.ones(2, 16, 3, dtype=torch.bool))  # 4 channels for a 3-channel model


def test_training_the_lite_model_end_to_end(dataset):
    cfg = {**dataset["config"], "use_optimized_model": True, "use_gradient_checkpoint": True}
    run = train(dataset["write"](cfg), progress_bar=False)
    state = torch.load(run.last_checkpoint, weights_only=False)
    assert any(key.startswith("model.bottleneck.0.qkv") for key in state["state_dict"])  # the lite layers were trained
    metrics = evaluate_run(run.root)
    assert metrics["train"]["parameters"] == sum(v.numel() for k, v in state["state_dict"].items() if k.startswith("model."))
    assert isinstance(metrics["completion"]["model"]["mae"], float)


class _FailingBackward(torch.autograd.Function):
    """Identity whose backward fails as a backend compiling the backward graph would."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise torch._dynamo.exc.InternalTorchDynamoError("simulated backward compilation failure")


def test_compile_failing_in_the_backward_pass_falls_back_and_trains_on(dataset, monkeypatch):
    def compile_with_broken_backward(model, **kwargs):
        def run(*args, **kw):
            recon, logits, log_spread = model(*args, **kw)
            return _FailingBackward.apply(recon), logits, log_spread

        return run

    monkeypatch.setattr(torch, "compile", compile_with_broken_backward)
    with pytest.warns(RuntimeWarning, match="simulated backward compilation failure"):
        run = train(dataset["write"]({**dataset["config"], "compile": True, "epochs": 2}), progress_bar=False)
    assert run.read_metrics()["train"]["epochs_completed"] == 2


def test_a_run_loaded_with_compile_gives_the_eager_outputs(dataset, tmp_path):
    run = train(dataset["write"]({**dataset["config"], "epochs": 1}), progress_bar=False)
    model = load_run(run, compile=True).model
    assert isinstance(model.compiled, CompiledOrEager) and not model.network.training
    values, visible = (t.to(model.device) for t in _inputs())  # the run loads on CUDA where there is one
    with torch.inference_mode():
        recon, logits, _ = model.forward(values, visible)  # compiled
        want_recon, want_logits, _ = model.network(values, visible)
    assert model.compiled.compiled is not None  # it really ran compiled
    torch.testing.assert_close(recon, want_recon, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, want_logits, atol=1e-5, rtol=1e-5)
    assert load_run(run).model.compiled is None  # the run's config did not ask for it
    # `tgatunet complete --compile` writes what the eager model writes
    (compiled_file,) = (w.outputs["completed"] for w in complete_run(run.root, "partial", tmp_path / "compiled", compile=True))
    (eager_file,) = (w.outputs["completed"] for w in complete_run(run.root, "partial", tmp_path / "eager"))
    pd.testing.assert_frame_equal(pd.read_csv(compiled_file), pd.read_csv(eager_file), atol=1e-5, rtol=1e-5)


def test_prediction_compiles_with_the_cpu_inference_options_on_a_cpu_only(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: seen.append(kwargs["options"]) or model)
    model = torch.nn.Linear(2, 2)
    CompiledOrEager.for_inference(model, torch.device("cpu"))
    CompiledOrEager.for_inference(model, torch.device("cuda"))
    CompiledOrEager(model)  # training: inductor's defaults
    assert seen == [CPU_INFERENCE_OPTIONS, None, None]
    assert CPU_INFERENCE_OPTIONS["cpp_wrapper"] is True


@pytest.mark.parametrize("checkpoint", [False, True])
def test_the_model_traces_as_one_graph_in_training_and_in_prediction(checkpoint):
    # A graph break splits the compiled model, and one inside a checkpointed block runs that block
    # eagerly: CPU dropout must not draw its mask with random_ while torch.compile traces.
    from torch._dynamo.testing import CompileCounter

    from tgatunet.model.tgat_unet import ModelSpec

    torch._dynamo.reset()
    model = TGATUNet(ModelSpec(in_channels=3, num_classes=2, hidden_channels=16, gradient_checkpoint=checkpoint))
    values, visible = _inputs()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    recon, logits, _ = compiled(values, visible)  # training mode: dropout on, blocks checkpointed
    (recon.square().mean() + logits.square().mean()).backward()
    assert all(p.grad is not None for p in model.network_parameters())
    model.eval()
    with torch.inference_mode():
        compiled(values, visible)
    assert counter.frame_count == 2  # one graph for training, one for prediction, no breaks
