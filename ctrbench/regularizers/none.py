"""``reg=none``: no regularization (every hook is the identity)."""

from __future__ import annotations

from ctrbench.regularizers.base import Regularizer


class NoRegularizer(Regularizer):
    """Adds nothing; the reference row of the regularizer comparison."""
