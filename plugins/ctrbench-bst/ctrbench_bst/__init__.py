"""A ctrbench plugin package: the template a third party copies (see its README)."""
