"""Compression transforms (`dldoctor compress`): each makes a variant that the runner measures against the original."""
