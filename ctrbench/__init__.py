"""ctrbench: plugin-based CTR experiments reproducing DIN (KDD'18) and DIEN (AAAI'19)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctrbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
