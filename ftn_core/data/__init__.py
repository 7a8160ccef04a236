"""Datasets on disk, the embedded synthetic benchmark, PK sampling and augmentation."""
