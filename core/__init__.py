"""The ground layer: ACL semantics, identities, the error root, configuration basics and
runtime helpers. It imports nothing else of Trove; every other package may import it."""
