"""YAML configs this package adds to ctrbench's Hydra search path (``+experiment=bst_vs_din``)."""
