"""Datasets: file parsers, offline datasets and synthetic tasks."""
