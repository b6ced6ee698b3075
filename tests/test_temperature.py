"""Temperature scaling: fitted on validation windows, it makes over-confident probabilities honest."""

import json

import numpy as np
import torch

from tgatunet.train.temperature import expected_calibration_error, fit_temperature


def test_temperature_scaling_undoes_over_confidence():
    generator = torch.Generator().manual_seed(0)
    honest = torch.randn(4000, 4, generator=generator) * 1.5  # probabilities softmax(honest) are the truth
    labels = torch.multinomial(torch.softmax(honest, dim=-1), 1, generator=generator).squeeze(1)
    over_confident = 4.0 * honest  # the same ranking of classes, four times too sure
    fitted = fit_temperature(over_confident, labels)
    assert 3.4 < fitted < 4.6
    before, after = expected_calibration_error(over_confident, labels), expected_calibration_error(over_confident, labels, fitted)
    assert before > 0.1 and after < 0.03
    assert torch.equal((over_confident / fitted).argmax(1), over_confident.argmax(1))  # no prediction changes


def test_an_honest_model_keeps_a_temperature_near_one():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4000, 3, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)
    assert 0.85 < fit_temperature(logits, labels) < 1.15


def test_a_trained_run_keeps_its_temperature_and_predict_applies_it(dataset):
    import tgatunet
    from tgatunet.train.run import train

    run = train(dataset["write"]({**dataset["config"], "epochs": 2}), progress_bar=False)
    saved = json.loads((run.root / "calibration.json").read_text())
    assert saved["temperature"] == 1.0 or saved["val_ece_scaled"] < saved["val_ece"]  # kept only when it helps
    assert run.read_metrics()["calibration"] == {k: v for k, v in saved.items() if k != "intervals"}
    loaded = tgatunet.load(run.root)
    model = loaded._model.predictor
    assert model.temperature == saved["temperature"]
    shape = (5, model.config.data.window_size, len(model.channels))
    values, visible = torch.randn(shape), torch.ones(shape, dtype=torch.bool)
    with torch.inference_mode():
        _, raw, _ = model.network(values, visible)
    model.temperature = 2.5
    _, scaled, _ = model.predict_windows(values, visible)
    np.testing.assert_allclose(scaled, raw.numpy() / 2.5, rtol=1e-5, atol=1e-6)
