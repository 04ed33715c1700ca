"""Evaluators take images and timings and return plain numbers. None of them knows about Optuna."""
