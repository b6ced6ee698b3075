"""tgatunet: a Temporal Graph Attention U-Net that completes missing modalities and classifies windows of multimodal sensor time series."""

__version__ = "0.1.0"
