"""Mixed and 16-bit precision through Lightning, with gradient clipping, the memory optimizer, checkpointing, compile.

On a CPU, ``16-mixed`` runs as ``bf16-mixed`` (Lightning's substitute) and is recorded so. Tolerance:
two epochs of the tiny dataset end within 10% of the float32 run's final validation loss (bfloat16
keeps 8 bits of mantissa; ``bf16-true`` also holds the weights in it).
"""

import pytest

from tgatunet.train.run import train

OPTIONS = {"clipping": {}, "memory optimizer": {"use_memory_optimizer": True}, "checkpointing": {"use_gradient_checkpoint": True}}


FLOAT32: dict[str, dict] = {}  # the float32 run of each option, trained once (every test's data are the same)


def _float32(dataset, option: str) -> dict:
    if option not in FLOAT32:
        FLOAT32[option] = _final_loss(dataset, "fp32", **OPTIONS.get(option, {}))
    return FLOAT32[option]


def _final_loss(dataset, name: str, **keys) -> dict:
    config = {**dataset["config"], "epochs": 2, "grad_clip": 1.0, "run_dir": str(dataset["dir"] / name), **keys}
    return train(dataset["write"](config, f"{name}.yaml"), progress_bar=False).read_metrics()["train"]




@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("precision,ran", [("bf16-mixed", "bf16-mixed"), ("16-mixed", "bf16-mixed"), ("bf16-true", "bf16-true")])
def test_each_precision_trains_with_each_option_close_to_float32(dataset, precision, ran, option):
    fp32 = _float32(dataset, option)
    low = _final_loss(dataset, "low", precision=precision, **OPTIONS[option])
    assert low["precision"] == ran
    assert low["final_val_loss"] == pytest.approx(fp32["final_val_loss"], rel=0.10)


def test_bf16_mixed_with_compile(dataset):
    fp32 = _float32(dataset, "clipping")
    compiled = _final_loss(dataset, "compiled", precision="bf16-mixed", compile=True)
    assert compiled["final_val_loss"] == pytest.approx(fp32["final_val_loss"], rel=0.10)
