"""tgatunet: a Temporal Graph Attention U-Net that completes missing modalities and classifies windows of multimodal sensor time series.

Example::

    import tgatunet
    run = tgatunet.train("config.yaml")          # or a Config, or a dict whose sources may be DataFrames
    run = tgatunet.load("runs/config")           # later, from the run directory alone
    completed = run.complete(df)                 # DataFrame in, DataFrame out
    windows = run.predict(df)                    # per-window classes; run.predict_proba(df) for probabilities
"""

# The training subpackage is loaded first, so that importing its modules later (where a run trains)
# does not rebind ``tgatunet.train`` from the function below to the subpackage.
import tgatunet.train  # noqa: F401  (its __init__ only: Lightning is imported where a run trains)
from tgatunet.api import Run, load, train
from tgatunet.config import Config, config_from_dict, load_config
from tgatunet.errors import ConfigError, DataError, RunError, TgatunetError

__version__ = "0.1.0"

__all__ = [
    "Run", "train", "load", "Config", "load_config", "config_from_dict",
    "TgatunetError", "ConfigError", "DataError", "RunError", "__version__",
]
