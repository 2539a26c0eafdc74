"""ascend-run: one tool for training and serving DeepSeek-V3 with MindSpore on Ascend servers."""

__version__ = "0.1.0"
