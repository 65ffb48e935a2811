"""Benchmarks that print figures: the training step (`train`), inference backends (`infer`) and the
compiler's own stages (`compile`), each against a baseline measured in the same process, with the
hand-written modules of the CIFAR families (`handwritten`) as baselines."""
