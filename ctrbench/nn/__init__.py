"""Reusable blocks for model plugins: embedding bank, pooling, MLP, attention, activation contract."""

from ctrbench.nn.activation import ActivationFactory, PReLU
from ctrbench.nn.embedding import Behaviours, EmbeddingBank, candidate_pairs, sum_pool
from ctrbench.nn.mlp import MLP

__all__ = ["MLP", "ActivationFactory", "Behaviours", "EmbeddingBank", "PReLU", "candidate_pairs", "sum_pool"]
