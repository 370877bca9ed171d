"""Reusable blocks for model plugins: embedding bank, pooling, MLP, activation contract."""

from ctrbench.nn.activation import ActivationFactory, PReLU
from ctrbench.nn.embedding import EmbeddingBank, sum_pool
from ctrbench.nn.mlp import MLP

__all__ = ["MLP", "ActivationFactory", "EmbeddingBank", "PReLU", "sum_pool"]
