"""Offline evaluation: inspection runs against ground truth, marking accuracy, and models on image datasets."""
