"""Treebank reading, vocabularies and the EWT download."""
