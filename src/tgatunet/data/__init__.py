"""Data loading, bundled datasets and the tgatunet data contract."""
